/* Server counters, rendered in the Prometheus text exposition format. One
 * mutex guards them all: they are touched a few times per request and once
 * per scheduler step, never per byte. */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include "srv_util.h"
#include "trinity.h"

#include <pthread.h>

typedef enum srv_endpoint {
    SRV_EP_CHAT = 0,
    SRV_EP_COMPLETIONS,
    SRV_EP_MODELS,
    SRV_EP_HEALTH,
    SRV_EP_METRICS,
    SRV_EP_APPLY_TEMPLATE,
    SRV_EP_OTHER,
    SRV_EP_COUNT,
} srv_endpoint;

const char *srv_endpoint_name(srv_endpoint e);

#define SRV_N_STATUS 24       /* distinct status codes remembered per endpoint */
#define SRV_N_LAT_BUCKETS 12

typedef struct srv_metrics {
    pthread_mutex_t mu;
    struct {
        int code;
        uint64_t n;
    } requests[SRV_EP_COUNT][SRV_N_STATUS];
    uint64_t lat_bucket[SRV_EP_COUNT][SRV_N_LAT_BUCKETS]; /* not cumulative; summed when rendered */
    uint64_t lat_count[SRV_EP_COUNT];
    double lat_sum[SRV_EP_COUNT];
    int64_t in_flight;        /* requests holding a generation slot */
    int64_t queued;           /* requests waiting for one */
    uint64_t prompt_tokens;   /* prompt tokens evaluated */
    uint64_t gen_tokens;      /* tokens generated */
    double prompt_seconds;    /* scheduler time spent in steps that evaluated prompt tokens */
    double gen_seconds;       /* scheduler time spent in steps that only generated */
    uint64_t gen_timed_tokens;/* tokens sampled in those steps */
    double last_gen_tps;      /* generation speed of the last finished request */
    uint64_t cancelled;       /* generations cut short by a client leaving */
    uint64_t rejected_busy;   /* 429s */
    uint64_t ctx_shifts;      /* chat requests that lost turns to fit the context */
    uint64_t ctx_dropped;     /* messages they lost */
    uint64_t spec_drafted;    /* speculative guesses verified */
    uint64_t spec_accepted;   /* of which accepted */
    int64_t connections;      /* open connections counted against --max-connections */
    uint64_t conn_evicted;    /* connections closed to make room for new ones */
    uint64_t conn_refused;    /* connections answered 503 at the cap */
    tr_kv_stats kv;           /* the engine's KV cache after the last step */
} srv_metrics;

extern const double srv_latency_buckets[SRV_N_LAT_BUCKETS];

void srv_metrics_init(srv_metrics *m);
void srv_metrics_destroy(srv_metrics *m);
void srv_metrics_request(srv_metrics *m, srv_endpoint e, int status, double seconds);
/* The open connections now, and connections just evicted and refused. */
void srv_metrics_connections(srv_metrics *m, int64_t open, unsigned evicted, unsigned refused);
/* A chat request lost `dropped` messages to the context shift. */
void srv_metrics_context_shift(srv_metrics *m, uint64_t dropped);
/* Render everything; false when memory runs out. */
bool srv_metrics_render(srv_metrics *m, srv_buf *out);

#endif
