/* trinity.h — the whole public surface of the Trinity inference engine.
 *
 * The CLI and the server use only what is declared here, the way llama.cpp's
 * tools use llama.h. Conventions: every fallible function returns a
 * tr_status and fills a caller-provided tr_error with one line that names the
 * file, tensor, field or parameter at fault. Objects have one owner and one
 * _free/_close. Little-endian hosts only (x86-64, aarch64). */
#ifndef TRINITY_H
#define TRINITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ errors */

typedef enum tr_status {
    TR_OK = 0,
    TR_ERR_IO,          /* a file could not be opened, read, mapped or written */
    TR_ERR_FORMAT,      /* malformed input (file, JSON, text) */
    TR_ERR_UNSUPPORTED, /* well-formed but not supported by this build */
    TR_ERR_NOMEM,       /* an allocation failed or would be unreasonably large */
    TR_ERR_ARG,         /* the caller passed a bad argument */
    TR_ERR_NOT_FOUND,   /* a key, tensor or token that was asked for is absent */
} tr_status;

typedef struct tr_error {
    char msg[512]; /* one line, no trailing newline; "" when no error */
} tr_error;

const char *tr_status_str(tr_status s);

/* ----------------------------------------------------------- tensor types */

/* ggml's numbering: these values are what GGUF files store. */
typedef enum tr_type {
    TR_TYPE_F32 = 0,
    TR_TYPE_F16 = 1,
    TR_TYPE_Q4_0 = 2,
    TR_TYPE_Q4_1 = 3,
    TR_TYPE_Q5_0 = 6,
    TR_TYPE_Q5_1 = 7,
    TR_TYPE_Q8_0 = 8,
    TR_TYPE_Q8_1 = 9,
    TR_TYPE_Q2_K = 10,
    TR_TYPE_Q3_K = 11,
    TR_TYPE_Q4_K = 12,
    TR_TYPE_Q5_K = 13,
    TR_TYPE_Q6_K = 14,
    TR_TYPE_Q8_K = 15,
    TR_TYPE_IQ2_XXS = 16,
    TR_TYPE_IQ2_XS = 17,
    TR_TYPE_IQ3_XXS = 18,
    TR_TYPE_IQ1_S = 19,
    TR_TYPE_IQ4_NL = 20,
    TR_TYPE_IQ3_S = 21,
    TR_TYPE_IQ2_S = 22,
    TR_TYPE_IQ4_XS = 23,
    TR_TYPE_I8 = 24,
    TR_TYPE_I16 = 25,
    TR_TYPE_I32 = 26,
    TR_TYPE_I64 = 27,
    TR_TYPE_F64 = 28,
    TR_TYPE_IQ1_M = 29,
    TR_TYPE_BF16 = 30,
    TR_TYPE_TQ1_0 = 34,
    TR_TYPE_TQ2_0 = 35,
    TR_TYPE_MXFP4 = 39,
    TR_TYPE_COUNT = 40, /* ggml's types are below this; GGUF files hold only these */
    /* Trinity's own formats, never in a GGUF file: KV-cache entries and
     * weights repacked at load (src/model/repack.c). */
    TR_TYPE_TQ2_32 = 64,   /* ternary, blocks of 32: d * {-1, 0, +1} (src/quant/blocks.h) */
    TR_TYPE_Q4_K_X16 = 65, /* Q4_K, sixteen rows interleaved per super-block (src/quant/blocks.h) */
    TR_TYPE_Q4_0_X16 = 66, /* Q4_0, Q5_0, Q8_0: sixteen rows interleaved per block (src/quant/blocks.h) */
    TR_TYPE_Q5_0_X16 = 67,
    TR_TYPE_Q8_0_X16 = 68,
    TR_TYPE_TABLE_SIZE = 69,
} tr_type;

/* Name as ggml spells it ("Q4_K"), or NULL when `type` is not a ggml type. */
const char *tr_type_name(int type);
/* Elements per block and bytes per block; 0 when `type` is not a ggml type. */
int64_t tr_type_block_size(int type);
size_t tr_type_block_bytes(int type);
/* Bytes of a row of ne0 elements; 0 if ne0 is not a multiple of the block. */
size_t tr_row_size(int type, int64_t ne0);
/* Whether this build can convert the type to / from float. */
bool tr_type_can_dequantize(int type);
bool tr_type_can_quantize(int type);
/* Convert n elements (a multiple of the block size). Return TR_ERR_ARG for a
 * bad n, TR_ERR_UNSUPPORTED when the type has no converter. Blocks are read
 * in place: src/dst must be aligned like the block's fields (2 bytes for the
 * fp16-scaled formats, 4 for F32 and Q8_K), as tensor data in a GGUF is. */
tr_status tr_dequantize(int type, const void *src, float *dst, int64_t n);
tr_status tr_quantize(int type, const float *src, void *dst, int64_t n);

/* -------------------------------------------------------------- quantize */

/* A GGUF file re-written with its weights in another format, each tensor's
 * type chosen as llama.cpp's llama-quantize chooses it for the same mix
 * (type: "Q4_K_M", "Q8_0", ... see tr_quantize_mix_names); without an
 * importance matrix the tensors are byte for byte llama-quantize's. */
typedef struct tr_quantize_params {
    const char *type;          /* the mix */
    bool allow_requantize;     /* convert tensors that are quantized already (else an error names one) */
    bool pure;                 /* every quantizable tensor the mix's base type: no per-category rules */
    bool leave_output;         /* keep output.weight as it is */
    int32_t output_type;       /* output.weight's type (a tr_type); -1: the mix decides */
    int32_t token_embd_type;   /* token_embd.weight's type; -1: the mix decides */
    int32_t n_threads;         /* threads converting rows (the bytes do not depend on it); 0: one */
    const char *imatrix;       /* llama.cpp's imatrix GGUF (llama-imatrix's output), or NULL */
    /* Called after each tensor is converted (or copied), in the output's order. */
    void (*progress)(void *user, int64_t i, int64_t n, const char *name, int from, int to, uint64_t bytes_from,
                     uint64_t bytes_to);
    void *user;
} tr_quantize_params;

tr_quantize_params tr_quantize_default_params(void);
/* The mixes tr_quantize_file knows, as one line of text. */
const char *tr_quantize_mix_names(void);
tr_status tr_quantize_file(const char *in, const char *out, const tr_quantize_params *p, tr_error *err);

/* ------------------------------------------------------------------- GGUF */

typedef enum tr_gguf_type {
    TR_GGUF_UINT8 = 0,
    TR_GGUF_INT8 = 1,
    TR_GGUF_UINT16 = 2,
    TR_GGUF_INT16 = 3,
    TR_GGUF_UINT32 = 4,
    TR_GGUF_INT32 = 5,
    TR_GGUF_FLOAT32 = 6,
    TR_GGUF_BOOL = 7,
    TR_GGUF_STRING = 8,
    TR_GGUF_ARRAY = 9,
    TR_GGUF_UINT64 = 10,
    TR_GGUF_INT64 = 11,
    TR_GGUF_FLOAT64 = 12,
    TR_GGUF_TYPE_COUNT = 13,
} tr_gguf_type;

const char *tr_gguf_type_name(tr_gguf_type t);

/* A string inside the file: not NUL-terminated, valid while the file is open. */
typedef struct tr_str {
    const char *ptr;
    uint64_t len;
} tr_str;

/* One metadata value. Scalars are decoded; strings and arrays point into the
 * mapping. */
typedef struct tr_gguf_value {
    tr_gguf_type type;
    union {
        uint64_t u64;  /* UINT8/16/32/64 */
        int64_t i64;   /* INT8/16/32/64 */
        double f64;    /* FLOAT32/64 */
        bool b;        /* BOOL */
        tr_str str;    /* STRING */
        struct {
            tr_gguf_type type;  /* element type */
            uint64_t n;         /* element count */
            const uint8_t *data; /* raw little-endian elements (fixed-size element types) */
            const uint64_t *str_off; /* STRING elements: offset of element j's length field from data */
            const struct tr_gguf_value *items; /* ARRAY elements: each decoded */
        } arr;
    } v;
} tr_gguf_value;

typedef struct tr_gguf_tensor {
    const char *name;  /* NUL-terminated */
    tr_type type;
    int n_dims;        /* 1..4 */
    int64_t ne[4];     /* ne[0] varies fastest (ggml order); unused dims are 1 */
    uint64_t offset;   /* from the start of the data section */
    uint64_t nbytes;
    const void *data;  /* points into the mapping: never copied */
} tr_gguf_tensor;

typedef struct tr_gguf tr_gguf;

/* mmap and validate a GGUF v2/v3 file. Every inconsistency is an error that
 * names the file and the problem; nothing is trusted before it is checked.
 * Keys and tensor names containing a NUL byte, duplicates, BOOL values other
 * than 0/1 and arrays nested deeper than 16 levels are refused (src/gguf/gguf.c
 * lists every rule). */
tr_status tr_gguf_open(const char *path, tr_gguf **out, tr_error *err);
/* The same over bytes in memory (not copied: keep them alive until close).
 * `name` is used in error messages. */
tr_status tr_gguf_open_memory(const void *data, size_t size, const char *name,
                              tr_gguf **out, tr_error *err);
void tr_gguf_close(tr_gguf *g);

const char *tr_gguf_path(const tr_gguf *g);
uint32_t tr_gguf_version(const tr_gguf *g);
uint64_t tr_gguf_file_size(const tr_gguf *g);
uint64_t tr_gguf_alignment(const tr_gguf *g);
uint64_t tr_gguf_data_offset(const tr_gguf *g);

int64_t tr_gguf_n_kv(const tr_gguf *g);
const char *tr_gguf_kv_key(const tr_gguf *g, int64_t i);           /* NUL-terminated */
const tr_gguf_value *tr_gguf_kv_value(const tr_gguf *g, int64_t i);
int64_t tr_gguf_find_kv(const tr_gguf *g, const char *key);        /* -1 if absent */
const tr_gguf_value *tr_gguf_get(const tr_gguf *g, const char *key); /* NULL if absent */

/* Typed look-ups: false when the key is absent or of an incompatible type.
 * get_int accepts every integer type (and BOOL); get_float also integers. */
bool tr_gguf_get_int(const tr_gguf *g, const char *key, int64_t *out);
bool tr_gguf_get_float(const tr_gguf *g, const char *key, double *out);
bool tr_gguf_get_bool(const tr_gguf *g, const char *key, bool *out);
bool tr_gguf_get_str(const tr_gguf *g, const char *key, tr_str *out);

/* Element j of an array value (j < n; out of range or a wrong element type
 * gives 0 / ""). arr_int converts floats by truncation and returns UINT64
 * elements' bits as int64; arr_float converts integers. */
tr_str tr_gguf_arr_str(const tr_gguf_value *arr, uint64_t j);
int64_t tr_gguf_arr_int(const tr_gguf_value *arr, uint64_t j);
double tr_gguf_arr_float(const tr_gguf_value *arr, uint64_t j);

int64_t tr_gguf_n_tensors(const tr_gguf *g);
const tr_gguf_tensor *tr_gguf_tensor_at(const tr_gguf *g, int64_t i);
const tr_gguf_tensor *tr_gguf_find_tensor(const tr_gguf *g, const char *name); /* NULL if absent */

/* Writer: collects metadata and tensors, then writes a GGUF v3 file. */
typedef struct tr_gguf_writer tr_gguf_writer;

tr_gguf_writer *tr_gguf_writer_new(void);
void tr_gguf_writer_free(tr_gguf_writer *w);
/* Set (or replace) a key. The value is deep-copied, strings and arrays too. */
tr_status tr_gguf_writer_set(tr_gguf_writer *w, const char *key, const tr_gguf_value *v, tr_error *err);
tr_status tr_gguf_writer_set_str(tr_gguf_writer *w, const char *key, const char *s, tr_error *err);
tr_status tr_gguf_writer_set_u32(tr_gguf_writer *w, const char *key, uint32_t x, tr_error *err);
tr_status tr_gguf_writer_set_f32(tr_gguf_writer *w, const char *key, float x, tr_error *err);
/* Copy every key of an open file. */
tr_status tr_gguf_writer_copy_kv(tr_gguf_writer *w, const tr_gguf *g, tr_error *err);
/* Add a tensor; `data` (nbytes = tr_row_size * rows) must stay valid until the write. */
tr_status tr_gguf_writer_add_tensor(tr_gguf_writer *w, const char *name, tr_type type, int n_dims,
                                    const int64_t ne[], const void *data, tr_error *err);
/* Add a tensor whose bytes are produced while the file is written: `fill`
 * is called once per such tensor, in tensor order, and sets *data to the
 * tensor's bytes (nbytes = tr_row_size * rows of them), which must stay
 * valid until the next fill call of this write or the write's end. So a
 * file can be written with one converted tensor in memory at a time
 * (quantizing a model larger than RAM). A fill that fails ends the write
 * with its status; nothing is left behind. */
typedef tr_status (*tr_gguf_fill_fn)(void *user, uint64_t nbytes, const void **data, tr_error *err);
tr_status tr_gguf_writer_add_tensor_fill(tr_gguf_writer *w, const char *name, tr_type type, int n_dims,
                                         const int64_t ne[], tr_gguf_fill_fn fill, void *user, tr_error *err);
tr_status tr_gguf_writer_write(tr_gguf_writer *w, const char *path, tr_error *err);

/* -------------------------------------------------------------- tokenizer */

typedef struct tr_vocab tr_vocab;

typedef enum tr_vocab_kind {
    TR_VOCAB_SPM = 1, /* tokenizer.ggml.model = "llama": SentencePiece-style with byte fallback */
    TR_VOCAB_BPE = 2, /* tokenizer.ggml.model = "gpt2": byte-level BPE */
} tr_vocab_kind;

/* Read tokenizer.ggml.* from an open file (tensors are not needed). */
tr_status tr_vocab_load(const tr_gguf *g, tr_vocab **out, tr_error *err);
void tr_vocab_free(tr_vocab *v);

tr_vocab_kind tr_vocab_kind_of(const tr_vocab *v);
int32_t tr_vocab_n_tokens(const tr_vocab *v);
int32_t tr_vocab_bos(const tr_vocab *v); /* -1 if none */
int32_t tr_vocab_eos(const tr_vocab *v); /* -1 if none */
/* End of generation: EOS, EOT, <end_of_turn>, <|im_end|>, ... as the file declares. */
bool tr_vocab_is_eog(const tr_vocab *v, int32_t id);
/* Text of token `id` as stored in the vocabulary (NUL-terminated). */
const char *tr_vocab_token_text(const tr_vocab *v, int32_t id);

/* Text -> ids. add_special: BOS/EOS as the file's add_bos/add_eos say.
 * parse_special: text of control tokens becomes those tokens (user-defined
 * tokens always match, as in llama.cpp). *ids is malloc'ed; the caller frees. */
tr_status tr_tokenize(const tr_vocab *v, const char *text, size_t len, bool add_special,
                      bool parse_special, int32_t **ids, size_t *n_ids, tr_error *err);

/* The bytes token `id` stands for (byte-fallback tokens give their one byte;
 * control tokens give "" unless `special`). Returns the length; writes at most
 * cap bytes (no NUL). A piece may end in the middle of a UTF-8 character. */
size_t tr_token_to_piece(const tr_vocab *v, int32_t id, bool special, char *buf, size_t cap);

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8
 * character: what a stream may print now, keeping the rest for later. */
size_t tr_utf8_complete_prefix(const char *s, size_t n);

/* Token attributes (llama.cpp's values), from tokenizer.ggml.token_type and
 * the fix-ups llama.cpp applies (e.g. EOG-looking tokens become CONTROL). */
typedef enum tr_token_attr {
    TR_TOKEN_ATTR_UNDEFINED = 0,
    TR_TOKEN_ATTR_UNKNOWN = 1 << 0,
    TR_TOKEN_ATTR_UNUSED = 1 << 1,
    TR_TOKEN_ATTR_NORMAL = 1 << 2,
    TR_TOKEN_ATTR_CONTROL = 1 << 3,
    TR_TOKEN_ATTR_USER_DEFINED = 1 << 4,
    TR_TOKEN_ATTR_BYTE = 1 << 5,
    TR_TOKEN_ATTR_NORMALIZED = 1 << 6,
    TR_TOKEN_ATTR_LSTRIP = 1 << 7,
    TR_TOKEN_ATTR_RSTRIP = 1 << 8,
    TR_TOKEN_ATTR_SINGLE_WORD = 1 << 9,
} tr_token_attr;

/* Attribute bits of token `id` (0 for an id out of range). */
uint32_t tr_vocab_token_attr(const tr_vocab *v, int32_t id);
float tr_vocab_token_score(const tr_vocab *v, int32_t id);
/* Id of the token whose text is exactly text[0..len), or -1. */
int32_t tr_vocab_find(const tr_vocab *v, const char *text, size_t len);
int32_t tr_vocab_eot(const tr_vocab *v); /* end of turn (<end_of_turn>, <|im_end|>, ...), -1 if none */
int32_t tr_vocab_eom(const tr_vocab *v); /* end of message (<|eom_id|>), -1 if none */
int32_t tr_vocab_unk(const tr_vocab *v); /* -1 if none */
int32_t tr_vocab_pad(const tr_vocab *v); /* -1 if none */
bool tr_vocab_add_bos(const tr_vocab *v); /* tr_tokenize(add_special) prepends BOS */
bool tr_vocab_add_eos(const tr_vocab *v); /* ... and appends EOS */
/* tokenizer.ggml.pre as the file names it ("" for SPM or when absent). */
const char *tr_vocab_pre(const tr_vocab *v);


/* ------------------------------------------------------------------ model */

typedef struct tr_model tr_model;

/* Load a model: mmap the GGUF, read the architecture's hyperparameters, find
 * and shape-check every weight, load the vocabulary, and (unless
 * tr_model_params.no_repack) copy the weight matrices into memory of the
 * model's own, some repacked. Unsupported architectures or features are
 * errors. */
tr_status tr_model_load(const char *path, tr_model **out, tr_error *err);
void tr_model_free(tr_model *m);

typedef struct tr_model_params {
    /* Keep every weight a view into the mapping (zero copy, nothing resident
     * but what the page cache holds). Otherwise every weight matrix is
     * copied at load into memory of the model's own in 2 MiB pages (fewer
     * TLB misses), TQ1_0 matrices rewritten into TQ2_0's layout (the same
     * trits and scales, so the same results, for 22 % more bytes than the
     * file's and the faster kernels) and, on x86 SIMD CPUs, Q4_K, Q4_0,
     * Q5_0 and Q8_0 into sixteen interleaved rows (docs/DESIGN.md). */
    bool no_repack;
} tr_model_params;
tr_model_params tr_model_default_params(void);
/* tr_model_load with parameters (tr_model_load: the defaults). */
tr_status tr_model_load_params(const char *path, const tr_model_params *p, tr_model **out, tr_error *err);
/* Bytes of weights repacked into the model's own memory (0: all in the mapping). */
uint64_t tr_model_repacked_bytes(const tr_model *m);
/* Bytes of weights copied as they are into the model's own memory (its 2 MiB
 * pages; 0 with no_repack). */
uint64_t tr_model_copied_bytes(const tr_model *m);

const tr_gguf *tr_model_gguf(const tr_model *m);
const tr_vocab *tr_model_vocab(const tr_model *m);
const char *tr_model_arch(const tr_model *m);      /* general.architecture */
const char *tr_model_name(const tr_model *m);      /* general.name, or the file's base name */
int32_t tr_model_n_vocab(const tr_model *m);
int32_t tr_model_n_ctx_train(const tr_model *m);
/* True for models with state-space layers (mamba, mamba2, granitehybrid):
 * each sequence carries a recurrent state (beside its K/V for a hybrid's
 * attention layers), so there is no prefix cache, no
 * speculative decoding and no streaming window (a state cannot be rolled
 * back or cut), and tr_kv_seq_rm of a suffix is refused. */
bool tr_model_is_recurrent(const tr_model *m);
uint64_t tr_model_n_params(const tr_model *m);
uint64_t tr_model_weight_bytes(const tr_model *m);
/* What the model computes, as `trinity info` prints it: one "name: value"
 * line per aspect (architecture, attention, positions, feed-forward, norms,
 * output), each naming the architecture's variations this file uses and
 * what the file carries that is not applied (as llama.cpp). Returns the
 * length it needed (snprintf's rule). */
size_t tr_model_describe(const tr_model *m, char *buf, size_t cap);

/* --------------------------------------------------------------- context */

/* A context holds the KV cache and scratch. The cache is one pool of n_ctx
 * token slots in blocks, shared by up to n_seq_max sequences (like
 * llama-server's unified KV cache); one sequence holds at most n_ctx_seq
 * positions. All memory is allocated here, none per token. */
typedef struct tr_context tr_context;

typedef struct tr_context_params {
    int32_t n_ctx;     /* KV pool size in tokens, all sequences together; 0 = the model's training context, capped at 4096 */
    int32_t n_batch;   /* most tokens one tr_decode takes; 0 = 512 */
    int32_t n_seq_max; /* sequences; 0 = 1 */
    int32_t n_threads; /* 0 = all cores */
    int32_t n_ctx_seq; /* most positions one sequence holds; 0 = min(n_ctx, the model's training context) */
    int32_t kv_block;  /* tokens per KV block; 0 = 16 */
    bool prefix_cache; /* register computed blocks for reuse (tr_kv_seq_reuse) */
    int32_t type_k;    /* KV cache entry types (-ctk / -ctv): TR_TYPE_F16, TR_TYPE_Q8_0, TR_TYPE_Q4_0 or */
    int32_t type_v;    /* TR_TYPE_TQ2_32; 0 = TR_TYPE_F16 (a float32 cache is not offered) */
    /* Streaming with attention sinks (StreamingLLM, --kv-sinks / --kv-window): a sequence keeps its
     * first n_sinks tokens and a window of at least n_window latest ones, so it never reaches a
     * context limit and its memory stays constant. n_window = 0: off. With it on, a sequence holds
     * at most round_up(n_sinks + n_window, kv_block) + kv_block positions (tr_context_n_ctx); when
     * full, tr_kv_seq_slide drops the block of positions after the sinks and re-rotates the keys
     * it moves (positions are positions within the cache, as in the paper). The prefix cache is off. */
    int32_t n_sinks;
    int32_t n_window;
    /* A quantized K (V) cache stores keys and queries (values, and the attention output back) rotated
     * by an orthonormal Walsh-Hadamard transform, as llama.cpp does (its attn_rot_k / attn_rot_v):
     * the rotation spreads a head's outlier channels over all of its elements, so a block's scale no
     * longer serves one large value and many small ones. q.k and the weighted sum of V are unchanged
     * in exact arithmetic. no_kv_rot (--no-kv-rot, llama.cpp's LLAMA_ATTN_ROT_DISABLE=1): off. */
    bool no_kv_rot;
} tr_context_params;

/* KV cache types by llama.cpp's names for -ctk / -ctv ("f16", "q8_0",
 * "q4_0", and Trinity's ternary "tq2_32"): the tr_type, or -1. */
int tr_kv_type_from_name(const char *name);
/* Those names, ", "-separated (for error messages and help). */
const char *tr_kv_type_names(void);

tr_context_params tr_context_default_params(void);
tr_status tr_context_new(tr_model *m, const tr_context_params *p, tr_context **out, tr_error *err);
void tr_context_free(tr_context *c);
int32_t tr_context_n_ctx(const tr_context *c);

/* What a matmul observer sees of one weight matrix product during
 * tr_decode, before the product: what an importance matrix is computed
 * from, as llama-imatrix's callback sees it. The weight is named as in the
 * file.
 * - A dense product (ids NULL), in batches of at least 16 tokens: n_tokens
 *   rows of cols floats at x.
 * - The experts' 3-D matrices (ffn_{gate,up,down}_exps), every batch (as
 *   llama-imatrix takes every MUL_MAT_ID): ids[t * n_used + k] is the expert
 *   (of n_expert) that token t's k-th choice is; that choice's input row is
 *   x + (t * n_used + k) * cols when per_choice (down: each choice's own
 *   activations), else x + t * cols (gate, up: the token's row). */
typedef struct tr_matmul_seen {
    const char *weight;
    const float *x;
    int64_t n_tokens, cols;
    const int32_t *ids;
    int32_t n_used, n_expert;
    bool per_choice;
} tr_matmul_seen;
typedef void (*tr_matmul_observer)(void *user, const tr_matmul_seen *seen);
/* NULL fn: none. Fails (out of memory) only for a mixture of experts, whose
 * per-choice inputs need a buffer of their own. */
tr_status tr_context_set_matmul_observer(tr_context *c, tr_matmul_observer fn, void *user, tr_error *err);

/* One forward pass over tokens of one or more sequences (like llama_batch). */
typedef struct tr_batch {
    int32_t n_tokens;
    const int32_t *token;  /* [n_tokens] */
    const int32_t *pos;    /* [n_tokens] position within its sequence */
    const int32_t *seq_id; /* [n_tokens] 0 .. n_seq_max-1 */
    const int8_t *logits;  /* [n_tokens] nonzero: keep this token's logits; NULL = only the last token's */
} tr_batch;

/* Each sequence's tokens in the batch must be its next positions, in order
 * (a sequence holding len positions takes len, len+1, ...). Errors (a
 * position out of order or past n_ctx_seq, a bad token id, a full cache:
 * TR_ERR_NOMEM) leave the cache as it was; except that a hybrid model
 * (state-space and attention layers) whose attention fails during the pass
 * (out of memory for its scratch) empties the batch's sequences, their
 * recurrent state having read part of it. */
tr_status tr_decode(tr_context *c, const tr_batch *b, tr_error *err);
/* Logits (n_vocab floats) of token i of the last batch, which asked for them. */
const float *tr_get_logits(tr_context *c, int32_t i);
/* Forget positions [p0, p1) of a sequence (seq < 0: every sequence). A
 * sequence's positions stay contiguous, so only a suffix can go: p1 < 0 or
 * p1 >= its length. Returns false (nothing changed) for a range inside it. */
bool tr_kv_seq_rm(tr_context *c, int32_t seq, int32_t p0, int32_t p1);
/* Streaming contexts (n_window > 0): when the sequence holds tr_context_n_ctx
 * positions, drop kv_block positions right after its sinks; the later ones
 * move down by kv_block and their keys are rotated back by as many
 * positions, with each layer's RoPE (a quantized K is dequantized, rotated
 * and quantized again). *dropped: the positions dropped (0: it had room).
 * Errors: not a streaming context, a bad sequence, or a sequence sharing
 * blocks with another (tr_kv_seq_cp): a streaming sequence owns its blocks. */
tr_status tr_kv_seq_slide(tr_context *c, int32_t seq, int32_t *dropped, tr_error *err);
/* Sinks and window of a streaming context (0, 0: not streaming). */
void tr_context_stream(const tr_context *c, int32_t *n_sinks, int32_t *n_window);
/* Positions a sequence holds. */
int32_t tr_kv_seq_len(const tr_context *c, int32_t seq);
/* dst (empty) shares src's positions (blocks are shared, copied on write). */
tr_status tr_kv_seq_cp(tr_context *c, int32_t src, int32_t dst, tr_error *err);
/* Prefix cache: an empty sequence takes the cached leading blocks of
 * tokens[0..n) (and the matching entries of a cached partial last block
 * after them), always leaving the last token to decode. Returns the
 * positions it now holds (0 with the cache off). */
int32_t tr_kv_seq_reuse(tr_context *c, int32_t seq, const int32_t *tokens, int32_t n);

/* KV-cache occupancy. */
typedef struct tr_kv_stats {
    int32_t block_size, n_blocks;
    int32_t blocks_used;    /* held by sequences */
    int32_t blocks_cached;  /* unused, kept for the prefix cache (evicted when the pool needs them) */
    int64_t tokens_held;    /* positions held by sequences */
    uint64_t evictions;     /* cached blocks given to new content */
    uint64_t hit_tokens;    /* prompt positions admitted requests took from the prefix cache */
    uint64_t lookup_tokens; /* prompt positions of the requests admitted with the cache on */
    size_t bytes_per_block; /* K and V of one block, all layers */
} tr_kv_stats;
void tr_context_kv_stats(const tr_context *c, tr_kv_stats *out);

/* --------------------------------------------------------------- sampling */

typedef struct tr_sampler_params {
    float temp;              /* <= 0: greedy */
    int32_t top_k;           /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off */
    int32_t repeat_last_n;   /* tokens the penalties look back over; -1: all */
    float presence_penalty;  /* 0: off */
    float frequency_penalty; /* 0: off */
    uint64_t seed;
} tr_sampler_params;

typedef struct tr_sampler tr_sampler;

tr_sampler_params tr_sampler_default_params(void); /* llama.cpp's defaults */
tr_sampler *tr_sampler_new(const tr_sampler_params *p, int32_t n_vocab);
void tr_sampler_free(tr_sampler *s);
/* Pick the next token from logits and remember it for the penalties. */
int32_t tr_sampler_sample(tr_sampler *s, const float *logits);
/* Remember a token (prompt tokens, for the penalties) without sampling. */
void tr_sampler_accept(tr_sampler *s, int32_t id);

/* ---------------------------------------------------------------- grammars */

/* A compiled grammar (llama.cpp's GBNF; docs/grammar.md): sampling under it
 * can only produce text the grammar accepts. */
typedef struct tr_grammar tr_grammar;
/* Compile GBNF text (start rule `root`); errors name the line and the rule. */
tr_status tr_grammar_parse(const char *text, size_t len, tr_grammar **out, tr_error *err);
tr_grammar *tr_grammar_clone(const tr_grammar *g);
void tr_grammar_free(tr_grammar *g);
/* 2: text[0..len) is a sentence of the grammar; 1: only a prefix of one;
 * 0: not even that; -1: out of memory. */
int tr_grammar_match(const tr_grammar *g, const char *text, size_t len);
/* A JSON schema (JSON text) as GBNF (*gbnf malloc'ed). What the schema asks
 * and the translation cannot enforce is refused (TR_ERR_UNSUPPORTED) naming
 * the keyword; docs/grammar.md lists what is supported. Whitespace between
 * tokens is bounded, so a model cannot pad forever. */
tr_status tr_json_schema_to_gbnf(const char *schema, size_t len, char **gbnf, tr_error *err);
/* The same as rules to embed in a larger grammar: the schema's value is rule
 * `rule` (letters and digits), its helper rules are named `rule-rN`; with
 * `primitives`, the shared JSON rules (ws, jstring, jvalue, ...) are written
 * too (once per grammar). tr_json_schema_to_gbnf is rule "root" with them. */
tr_status tr_json_schema_to_gbnf_rule(const char *schema, size_t len, const char *rule, bool primitives,
                                      char **gbnf, tr_error *err);

/* A vocabulary's tokens as bytes, for grammars (built once, shared by any
 * number of samplers; read-only). */
typedef struct tr_grammar_vocab tr_grammar_vocab;
tr_grammar_vocab *tr_grammar_vocab_new(const tr_vocab *v);
void tr_grammar_vocab_free(tr_grammar_vocab *gv);
/* Constrain a sampler to a grammar (copied; gv must outlive the sampler):
 * every token the grammar forbids is removed from the candidates before the
 * penalties, top-k, top-p, min-p, temperature and the draw, exactly as if its
 * logit were -infinity; end-of-generation tokens are allowed only when the
 * text is complete. tr_sampler_sample advances the grammar by the token it
 * picks (tr_sampler_accept does not: it is for prompt tokens). When no token
 * is allowed, the sampler picks the vocabulary's first end-of-generation token. */
tr_status tr_sampler_set_grammar(tr_sampler *s, const tr_grammar *g, const tr_grammar_vocab *gv, tr_error *err);
/* Whether the sampler's grammar (if any) is at a complete sentence. */
bool tr_sampler_grammar_complete(const tr_sampler *s);

/* ------------------------------------------------------------------ engine */

/* The engine: a context plus the scheduler every caller shares (the server,
 * run, chat, perplexity, bench). Submit sequences, call tr_engine_step until
 * they are done, take their sampled tokens. Each step builds one batch from
 * every running sequence, decode tokens first, then chunks of prompts with
 * the room left; new sequences are admitted while the KV pool has blocks for
 * their prompt, and reuse the leading blocks of their prompt already in the
 * prefix cache. A sequence's tokens and logits are the same bits whether it
 * runs alone or with others, whatever the chunks its prompt is cut into, and
 * whether its prefix came from the cache. Not thread-safe: one thread owns
 * an engine. */
typedef struct tr_engine tr_engine;

typedef struct tr_engine_params {
    tr_context_params ctx;  /* n_ctx: the KV pool; n_seq_max: sequences running at once */
    int32_t prefill_chunk;  /* prompt tokens per step while others decode; 0: max(n_batch / 8, 32) */
    bool no_prefix_cache;   /* neither reuse nor keep computed blocks */
    /* A draft model for TR_SPEC_DRAFT (NULL: none; not owned; its vocabulary
     * must equal the model's, or tr_engine_new fails naming the difference).
     * It gets a context of its own with the same sequences and pool size. */
    tr_model *draft_model;
} tr_engine_params;

/* Speculative decoding. A drafter guesses the next tokens of a sequence;
 * the model scores the sequence's next token and every guess in one batch;
 * a guess is kept only while it equals the token the sampler picks from
 * the model's logits at its position (the sampler's randomness depends only
 * on the seed and the position), and the cache entries of rejected guesses
 * are removed. So the tokens are exactly those of decoding one at a time:
 * speculation changes only how many tokens a step yields. */
typedef enum tr_spec_kind {
    TR_SPEC_NONE = 0,
    TR_SPEC_NGRAM,      /* prompt lookup: the continuation of the latest earlier occurrence of the last tokens */
    TR_SPEC_LOOKAHEAD,  /* Jacobi iteration on a window of guesses, plus n-grams harvested from its trajectories */
    TR_SPEC_DRAFT,      /* the engine's draft model, decoding greedily ahead */
} tr_spec_kind;

typedef struct tr_spec_params {
    tr_spec_kind kind;
    int32_t n_max;      /* most guesses a step verifies; 0: 16 */
    int32_t n_min;      /* fewer guesses than this are not worth a verification: none is made */
} tr_spec_params;

/* "none", "ngram", "lookahead", "draft" -> kind; false for another name. */
bool tr_spec_kind_parse(const char *name, tr_spec_kind *out);
const char *tr_spec_kind_name(tr_spec_kind k);

tr_engine_params tr_engine_default_params(void);
tr_status tr_engine_new(tr_model *m, const tr_engine_params *p, tr_engine **out, tr_error *err);
void tr_engine_free(tr_engine *e);
tr_context *tr_engine_context(tr_engine *e);

typedef struct tr_seq_params {
    const int32_t *prompt;     /* copied by submit */
    int32_t n_prompt;
    int32_t n_predict;         /* tokens to generate; -1: until end of generation or the sequence's limit; 0: none */
    tr_sampler_params sampling;
    bool ignore_eog;           /* generate past end-of-generation tokens (benchmarks) */
    bool no_cache;             /* this sequence neither reuses nor keeps prefix-cache blocks */
    /* Called during tr_engine_step with the logits of every prompt token
     * from position logits_from on (pos: its position), for perplexity;
     * NULL: only the last one is computed. */
    void (*on_prompt_logits)(void *user, int32_t pos, const float *logits);
    int32_t logits_from;
    void *user;
    /* Speculative decoding for this sequence (kind TR_SPEC_NONE: off). How
     * many guesses a step takes adapts to how many were accepted, and to the
     * cost of a larger batch: none where they would not pay. */
    tr_spec_params spec;
    /* Constrain the sampled text to a grammar (copied by submit; NULL: none):
     * see tr_sampler_set_grammar. The sequence ends with an end-of-generation
     * token once the grammar's text is complete and the model (or the grammar,
     * when nothing else can follow) ends it. */
    const tr_grammar *grammar;
} tr_seq_params;

/* Queue a sequence; returns its id (>= 0), or -1 with err: an empty prompt,
 * or one longer than a sequence may hold (TR_ERR_ARG, naming both lengths). */
int64_t tr_engine_submit(tr_engine *e, const tr_seq_params *p, tr_error *err);
/* What one step did. */
typedef struct tr_step_stats {
    int32_t n_tokens;        /* tokens the forward pass ran (0: nothing to do) */
    int32_t n_prompt_tokens; /* of which prompt (prefill) tokens */
    int32_t n_sampled;       /* tokens sampled */
    int32_t n_drafted;       /* guesses verified (speculative decoding) */
    int32_t n_accepted;      /* of which accepted */
} tr_step_stats;
/* One step (stats may be NULL). An error of the forward pass ends the
 * sequences of that batch (TR_FINISH_ERROR, err says why); the engine goes on. */
tr_status tr_engine_step(tr_engine *e, tr_step_stats *stats, tr_error *err);

typedef enum tr_finish {
    TR_FINISH_NONE = 0,   /* still running (or waiting) */
    TR_FINISH_EOG,        /* an end-of-generation token (not included in the tokens) */
    TR_FINISH_LENGTH,     /* n_predict tokens generated (or n_predict = 0 and the prompt is done) */
    TR_FINISH_CONTEXT,    /* the sequence reached the most positions it may hold */
    TR_FINISH_CANCELLED,
    TR_FINISH_ERROR,      /* the step failed for it */
} tr_finish;

typedef struct tr_seq_info {
    tr_finish finish;
    bool running;           /* admitted (not waiting for room) */
    int32_t n_prompt, n_cached; /* prompt tokens, of which reused from the prefix cache */
    int32_t n_generated;    /* tokens sampled, an ending end-of-generation token included (OpenAI's
                             * completion_tokens); take hands out the others */
    int32_t n_drafted, n_accepted; /* speculative guesses verified, and accepted */
    int32_t n_steps;        /* steps that sampled for it (n_generated / n_steps: tokens per step) */
} tr_seq_info;

/* Copy up to cap tokens sampled since the last take into tokens; returns
 * how many. When the sequence is finished and every token was taken, its
 * record is released: the id is unknown afterwards (info->finish says
 * why it ended). -1: unknown id. */
int32_t tr_engine_take(tr_engine *e, int64_t id, int32_t *tokens, int32_t cap, tr_seq_info *info);
/* Logits of the sequence's latest sampled token: valid until the next step
 * (with speculation a step may sample several: these are the last one's). */
const float *tr_engine_logits(tr_engine *e, int64_t id);
/* End a sequence now: its KV blocks are released at once (take still
 * reports it, finished CANCELLED, unless release is true: then it is gone). */
void tr_engine_cancel(tr_engine *e, int64_t id, bool release);
/* Sequences waiting for room and running; sequences preempted so far (their
 * cache released for lack of blocks, recomputed later). Pointers may be NULL. */
void tr_engine_load(const tr_engine *e, int32_t *n_waiting, int32_t *n_running, int64_t *n_preempted);

/* ---------------------------------------------------------- chat templates */

typedef struct tr_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} tr_chat_msg;

/* Format a conversation with the model's template (tokenizer.chat_template,
 * recognised as one of the known formats), or with `format` when not NULL
 * ("gemma", "chatml", "llama3", "llama2"). add_assistant: end with the
 * prompt of the assistant's turn. *out is malloc'ed. */
tr_status tr_chat_format(const tr_model *m, const char *format, const tr_chat_msg *msgs, size_t n,
                         bool add_assistant, char **out, tr_error *err);
/* Is `name` one of tr_chat_format's built-in formats? */
bool tr_chat_format_known(const char *name);
/* The built-in format tr_chat_format picks for m when given none (*name static). */
tr_status tr_chat_format_detect(const tr_model *m, const char **name, tr_error *err);

/* The chat template a model is used with: `spec` a built-in format name
 * (tr_chat_format_known) or the path of a Jinja file; spec NULL: the
 * model's tokenizer.chat_template, or for a file without one the built-in
 * format its vocabulary suggests (tr_chat_template_is_builtin then says so:
 * such a base model's replies may not end). m may be NULL with a spec. */
typedef struct tr_chat_template tr_chat_template;

typedef struct tr_chat_apply_opts {
    const char *tools_json;      /* a JSON array of tools, or NULL: `tools` is none */
    const char *extra_json;      /* a JSON object of more variables (enable_thinking ...), or NULL */
    bool add_generation_prompt;  /* end with the start of the assistant's turn */
    const char *bos_token, *eos_token; /* NULL: the model's token texts ("" without a model) */
    int64_t now;                 /* strftime_now's time, as tr_template_opts.now */
    bool strip_special;          /* as llama.cpp: drop a leading BOS (trailing EOS) text when the
                                    tokenizer adds that token itself */
} tr_chat_apply_opts;

tr_status tr_chat_template_load(const tr_model *m, const char *spec, tr_chat_template **out, tr_error *err);
/* Render messages_json (a JSON array of OpenAI messages, tool calls and tool
 * results as they are) to the prompt text. *out is malloc'ed. */
tr_status tr_chat_template_apply(const tr_chat_template *ct, const char *messages_json,
                                 const tr_chat_apply_opts *opts, char **out, tr_error *err);
/* The same for plain messages (role and text content); a "tool" message is
 * written as the user's turn (its content already in the form the model is to
 * read, e.g. Hermes' <tool_response>). */
tr_status tr_chat_template_apply_msgs(const tr_chat_template *ct, const tr_chat_msg *msgs, size_t n,
                                      const tr_chat_apply_opts *opts, char **out, tr_error *err);
bool tr_chat_template_is_builtin(const tr_chat_template *ct);
const char *tr_chat_template_describe(const tr_chat_template *ct); /* where it came from, for messages */
void tr_chat_template_free(tr_chat_template *ct);

/* ------------------------------------------------ Jinja templates (chat) */

/* A Jinja template as Hugging Face transformers renders chat templates
 * (jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks,
 * the loopcontrols extension, a tojson without HTML escaping, raise_exception
 * and strftime_now). Parsed once; rendering is thread-safe (each render has
 * its own memory). Errors name the template line: "template line 12: ...";
 * a template's raise_exception gives its message there. */
typedef struct tr_template tr_template;

typedef struct tr_template_opts {
    size_t max_output;  /* bytes of output before failing; 0: 16 MiB */
    uint64_t max_steps; /* evaluation steps before failing (endless loops); 0: 5 million (the largest
                           template llama.cpp ships takes 3,425 on a 6-message tool conversation) */
    size_t max_memory;  /* bytes the render may allocate; 0: 128 MiB */
    int64_t now;        /* strftime_now's time, unix seconds shown as UTC; 0: now, local time */
} tr_template_opts;

tr_status tr_template_parse(const char *src, size_t len, tr_template **out, tr_error *err);
/* Render with the variables of vars_json (a JSON object: messages, tools,
 * add_generation_prompt, bos_token ...). opts may be NULL. *out is malloc'ed. */
tr_status tr_template_render(const tr_template *t, const char *vars_json, const tr_template_opts *opts, char **out,
                             tr_error *err);
void tr_template_free(tr_template *t);

/* Context shift for chat: when a conversation's prompt and the room its
 * answer needs exceed the context, drop whole turns, oldest first, and render
 * again; the prompt is always the template applied to a well-formed
 * conversation. A turn is a user message and the assistant (and tool)
 * messages after it, up to the next user message; the leading system (or
 * developer) messages and the last turn are never dropped. render: the one
 * "messages -> prompt" function of the caller (tr_chat_format, a Jinja
 * renderer, ...; *out malloc'ed); tokenize: prompt -> ids (*ids malloc'ed). */
typedef tr_status (*tr_chat_render_fn)(void *user, const tr_chat_msg *msgs, size_t n, char **out, tr_error *err);
typedef tr_status (*tr_chat_tokenize_fn)(void *user, const char *text, size_t len, int32_t **ids, size_t *n,
                                         tr_error *err);
/* The room an answer needs after the prompt: max_tokens when given (> 0; at
 * most n_ctx - 1), else a quarter of the context. */
int32_t tr_chat_room(int32_t max_tokens, int32_t n_ctx);
/* Render msgs[0..n) and tokenize; while the prompt plus `room` exceeds n_ctx,
 * drop the oldest droppable turn and render again. *ids / *n_ids: the prompt
 * that fits, or the shortest one there is when even the system messages and
 * the last turn leave less than `room` (the caller decides: refuse a prompt
 * of n_ctx tokens or more, else let generation stop at the context).
 * *dropped: how many messages after the leading system ones were dropped
 * (the kept conversation is the system messages, then msgs[n_sys + *dropped
 * .. n)). Errors: the renderer's or the tokenizer's. */
tr_status tr_chat_fit(void *user, tr_chat_render_fn render, tr_chat_tokenize_fn tokenize, const tr_chat_msg *msgs,
                      size_t n, int32_t n_ctx, int32_t room, int32_t **ids, size_t *n_ids, size_t *dropped,
                      tr_error *err);

/* ----------------------------------------------------------------- system */

/* The CPU features the kernels may use, e.g. "avx2 fma f16c avx512f ...". */
const char *tr_system_info(void);
/* Memory read bandwidth in GB/s with n_threads threads streaming a 512 MiB
 * buffer (best of 5 passes): the ceiling generation speed is compared to. */
double tr_read_bandwidth_gbs(int n_threads);

#ifdef __cplusplus
}
#endif
#endif
