#include "metrics.h"

#include <string.h>

const double srv_latency_buckets[SRV_N_LAT_BUCKETS] = {0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                       2.5,  5,    10,  30,   60,  120};

static const char *const ep_names[SRV_EP_COUNT] = {
    "/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/apply-template", "other",
};

const char *srv_endpoint_name(srv_endpoint e) {
    return (unsigned)e < SRV_EP_COUNT ? ep_names[e] : "other";
}

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void srv_metrics_destroy(srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

void srv_metrics_request(srv_metrics *m, srv_endpoint e, int status, double seconds) {
    if ((unsigned)e >= SRV_EP_COUNT) e = SRV_EP_OTHER;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < SRV_N_STATUS; i++) {
        if (m->requests[e][i].code == status || m->requests[e][i].code == 0) {
            m->requests[e][i].code = status;
            m->requests[e][i].n++;
            break;
        }
    }
    int b = 0;
    while (b < SRV_N_LAT_BUCKETS && seconds > srv_latency_buckets[b]) b++;
    if (b < SRV_N_LAT_BUCKETS) m->lat_bucket[e][b]++;
    m->lat_count[e]++;
    m->lat_sum[e] += seconds;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_connections(srv_metrics *m, int64_t open, unsigned evicted, unsigned refused) {
    pthread_mutex_lock(&m->mu);
    m->connections = open;
    m->conn_evicted += evicted;
    m->conn_refused += refused;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_context_shift(srv_metrics *m, uint64_t dropped) {
    pthread_mutex_lock(&m->mu);
    m->ctx_shifts++;
    m->ctx_dropped += dropped;
    pthread_mutex_unlock(&m->mu);
}

bool srv_metrics_render(srv_metrics *m, srv_buf *o) {
    bool ok = true;
    pthread_mutex_lock(&m->mu);
    ok &= srv_buf_puts(o, "# HELP trinity_requests_total HTTP requests answered, by endpoint and status.\n"
                          "# TYPE trinity_requests_total counter\n");
    for (int e = 0; e < SRV_EP_COUNT; e++)
        for (int i = 0; i < SRV_N_STATUS && m->requests[e][i].code; i++)
            ok &= srv_buf_printf(o, "trinity_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                                 ep_names[e], m->requests[e][i].code,
                                 (unsigned long long)m->requests[e][i].n);
    ok &= srv_buf_printf(o,
                         "# HELP trinity_requests_in_flight Requests the engine is running.\n"
                         "# TYPE trinity_requests_in_flight gauge\n"
                         "trinity_requests_in_flight %lld\n"
                         "# HELP trinity_requests_queued Requests waiting for room (a sequence slot or KV blocks).\n"
                         "# TYPE trinity_requests_queued gauge\n"
                         "trinity_requests_queued %lld\n"
                         "# HELP trinity_requests_rejected_busy_total Requests answered 429 because the queue was full.\n"
                         "# TYPE trinity_requests_rejected_busy_total counter\n"
                         "trinity_requests_rejected_busy_total %llu\n"
                         "# HELP trinity_requests_cancelled_total Generations stopped because the client went away.\n"
                         "# TYPE trinity_requests_cancelled_total counter\n"
                         "trinity_requests_cancelled_total %llu\n"
                         "# HELP trinity_prompt_tokens_total Prompt tokens evaluated.\n"
                         "# TYPE trinity_prompt_tokens_total counter\n"
                         "trinity_prompt_tokens_total %llu\n"
                         "# HELP trinity_generated_tokens_total Tokens generated.\n"
                         "# TYPE trinity_generated_tokens_total counter\n"
                         "trinity_generated_tokens_total %llu\n"
                         "# HELP trinity_connections_open Open connections (at most --max-connections).\n"
                         "# TYPE trinity_connections_open gauge\n"
                         "trinity_connections_open %lld\n"
                         "# HELP trinity_connections_evicted_total Connections closed at the cap to make room: idle, or "
                         "not done sending a request.\n"
                         "# TYPE trinity_connections_evicted_total counter\n"
                         "trinity_connections_evicted_total %llu\n"
                         "# HELP trinity_connections_refused_total Connections answered 503 at the cap (every one busy).\n"
                         "# TYPE trinity_connections_refused_total counter\n"
                         "trinity_connections_refused_total %llu\n"
                         "# HELP trinity_context_shift_requests_total Chat requests that lost their oldest turns to "
                         "fit the context.\n"
                         "# TYPE trinity_context_shift_requests_total counter\n"
                         "trinity_context_shift_requests_total %llu\n"
                         "# HELP trinity_context_shift_dropped_messages_total Messages those requests lost.\n"
                         "# TYPE trinity_context_shift_dropped_messages_total counter\n"
                         "trinity_context_shift_dropped_messages_total %llu\n",
                         (long long)m->in_flight, (long long)m->queued,
                         (unsigned long long)m->rejected_busy, (unsigned long long)m->cancelled,
                         (unsigned long long)m->prompt_tokens, (unsigned long long)m->gen_tokens,
                         (long long)m->connections, (unsigned long long)m->conn_evicted,
                         (unsigned long long)m->conn_refused, (unsigned long long)m->ctx_shifts,
                         (unsigned long long)m->ctx_dropped);
    double ptps = m->prompt_seconds > 0 ? (double)m->prompt_tokens / m->prompt_seconds : 0;
    double gtps = m->gen_seconds > 0 ? (double)m->gen_timed_tokens / m->gen_seconds : 0;
    ok &= srv_buf_printf(o,
                         "# HELP trinity_spec_drafted_tokens_total Speculative guesses verified.\n"
                         "# TYPE trinity_spec_drafted_tokens_total counter\n"
                         "trinity_spec_drafted_tokens_total %llu\n"
                         "# HELP trinity_spec_accepted_tokens_total Speculative guesses accepted (tokens for free).\n"
                         "# TYPE trinity_spec_accepted_tokens_total counter\n"
                         "trinity_spec_accepted_tokens_total %llu\n"
                         "# HELP trinity_prompt_tokens_per_second Prompt evaluation speed since start.\n"
                         "# TYPE trinity_prompt_tokens_per_second gauge\n"
                         "trinity_prompt_tokens_per_second %.3f\n"
                         "# HELP trinity_generated_tokens_per_second Generation speed since start (all slots together).\n"
                         "# TYPE trinity_generated_tokens_per_second gauge\n"
                         "trinity_generated_tokens_per_second %.3f\n"
                         "# HELP trinity_last_request_tokens_per_second Generation speed of the last finished request.\n"
                         "# TYPE trinity_last_request_tokens_per_second gauge\n"
                         "trinity_last_request_tokens_per_second %.3f\n",
                         (unsigned long long)m->spec_drafted, (unsigned long long)m->spec_accepted, ptps, gtps,
                         m->last_gen_tps);
    const tr_kv_stats *kv = &m->kv;
    const double hit_rate = kv->lookup_tokens ? (double)kv->hit_tokens / (double)kv->lookup_tokens : 0;
    ok &= srv_buf_printf(o,
                         "# HELP trinity_kv_blocks_total Blocks in the KV cache's pool.\n"
                         "# TYPE trinity_kv_blocks_total gauge\n"
                         "trinity_kv_blocks_total %d\n"
                         "# HELP trinity_kv_block_tokens Token slots per KV block.\n"
                         "# TYPE trinity_kv_block_tokens gauge\n"
                         "trinity_kv_block_tokens %d\n"
                         "# HELP trinity_kv_blocks_used KV blocks held by running requests.\n"
                         "# TYPE trinity_kv_blocks_used gauge\n"
                         "trinity_kv_blocks_used %d\n"
                         "# HELP trinity_kv_blocks_cached KV blocks no request holds, kept for the prefix cache.\n"
                         "# TYPE trinity_kv_blocks_cached gauge\n"
                         "trinity_kv_blocks_cached %d\n"
                         "# HELP trinity_kv_tokens_held Positions the running requests hold in the KV cache.\n"
                         "# TYPE trinity_kv_tokens_held gauge\n"
                         "trinity_kv_tokens_held %lld\n"
                         "# HELP trinity_prefix_cache_hit_tokens_total Prompt tokens reused from the prefix cache.\n"
                         "# TYPE trinity_prefix_cache_hit_tokens_total counter\n"
                         "trinity_prefix_cache_hit_tokens_total %llu\n"
                         "# HELP trinity_prefix_cache_lookup_tokens_total Prompt tokens looked up in the prefix cache.\n"
                         "# TYPE trinity_prefix_cache_lookup_tokens_total counter\n"
                         "trinity_prefix_cache_lookup_tokens_total %llu\n"
                         "# HELP trinity_prefix_cache_hit_rate Hit tokens / looked-up tokens since start.\n"
                         "# TYPE trinity_prefix_cache_hit_rate gauge\n"
                         "trinity_prefix_cache_hit_rate %.4f\n"
                         "# HELP trinity_kv_evictions_total Cached KV blocks given to new content.\n"
                         "# TYPE trinity_kv_evictions_total counter\n"
                         "trinity_kv_evictions_total %llu\n",
                         kv->n_blocks, kv->block_size, kv->blocks_used, kv->blocks_cached, (long long)kv->tokens_held,
                         (unsigned long long)kv->hit_tokens, (unsigned long long)kv->lookup_tokens, hit_rate,
                         (unsigned long long)kv->evictions);
    ok &= srv_buf_puts(o, "# HELP trinity_request_duration_seconds Time from a request's arrival to its last byte.\n"
                          "# TYPE trinity_request_duration_seconds histogram\n");
    for (int e = 0; e < SRV_EP_COUNT; e++) {
        if (!m->lat_count[e]) continue;
        uint64_t cum = 0;
        for (int b = 0; b < SRV_N_LAT_BUCKETS; b++) {
            cum += m->lat_bucket[e][b];
            ok &= srv_buf_printf(o, "trinity_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
                                 ep_names[e], srv_latency_buckets[b], (unsigned long long)cum);
        }
        ok &= srv_buf_printf(o,
                             "trinity_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n"
                             "trinity_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n"
                             "trinity_request_duration_seconds_count{endpoint=\"%s\"} %llu\n",
                             ep_names[e], (unsigned long long)m->lat_count[e], ep_names[e],
                             m->lat_sum[e], ep_names[e], (unsigned long long)m->lat_count[e]);
    }
    pthread_mutex_unlock(&m->mu);
    return ok;
}
