/* Shared between the GGUF reader and writer: value geometry and freeing. */
#ifndef TR_GGUF_INTERNAL_H
#define TR_GGUF_INTERNAL_H

#include "trinity.h"

#define TR_GGUF_MAGIC "GGUF"
#define TR_GGUF_DEFAULT_ALIGNMENT 32u
/* Arrays of arrays deeper than this are refused: a hostile file could
 * otherwise nest a few hundred thousand levels and exhaust the stack. */
#define TR_GGUF_MAX_ARRAY_DEPTH 16

/* Bytes of one element of a fixed-size type; 0 for STRING and ARRAY. */
size_t tr_gguf_type_size(tr_gguf_type t);

/* Free what a value owns (str_off, items, recursively); not the value itself.
 * For values made by the writer also the string/array bytes (`owned`). */
void tr_gguf_value_free_parts(tr_gguf_value *v, bool owned);

#endif
