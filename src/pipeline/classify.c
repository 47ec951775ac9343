/* Layer kinds from tensor names and shapes. */
#include "common/internal.h"

#include <string.h>

const char *mq_layer_kind_name(mq_layer_kind kind) {
    switch (kind) {
    case MQ_KIND_OTHER: return "other";
    case MQ_KIND_LINEAR: return "linear";
    case MQ_KIND_CONV: return "conv";
    case MQ_KIND_EMBEDDING: return "embedding";
    case MQ_KIND_NORM: return "norm";
    case MQ_KIND_BIAS: return "bias";
    case MQ_KIND_RNN: return "rnn";
    }
    return "unknown";
}

/* True when `word` occurs in `name` as a whole dot-separated component or component prefix
 * part (e.g. "ln_f" matches "ln"), case-sensitive. */
static bool has_part(const char *name, const char *word) {
    size_t k = strlen(word);
    for (const char *p = name; (p = strstr(p, word)) != NULL; p++) {
        bool start = p == name || p[-1] == '.' || p[-1] == '_';
        char after = p[k];
        bool end = after == 0 || after == '.' || after == '_' || (after >= '0' && after <= '9');
        if (start && end) return true;
    }
    return false;
}

static const char *last_part(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

static bool is_embedding_name(const char *n) {
    static const char *const words[] = {"embed", "embeds", "embedding", "embeddings", "wte", "wpe",
                                        "tok_embeddings", "embed_tokens", "word_embeddings",
                                        "position_embeddings", "token_type_embeddings", "emb",
                                        "tok_emb", "pos_emb", "shared"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (has_part(n, words[i])) return true;
    return false;
}

static bool is_norm_name(const char *n) {
    static const char *const words[] = {"norm", "ln", "layernorm", "layer_norm", "rmsnorm", "bn",
                                        "batchnorm", "batch_norm", "input_layernorm",
                                        "post_attention_layernorm", "ln_f", "final_layernorm"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (has_part(n, words[i])) return true;
    /* any component containing "norm" (e.g. "q_norm", "RMSNorm") */
    return strstr(n, "norm") != NULL || strstr(n, "Norm") != NULL;
}

mq_layer_kind mq_classify_tensor(const mq_tensor *t) {
    const char *n = t->name ? t->name : "";
    const char *leaf = last_part(n);
    if (!strcmp(leaf, "running_mean") || !strcmp(leaf, "running_var") ||
        !strcmp(leaf, "num_batches_tracked"))
        return MQ_KIND_NORM;
    if (!strncmp(leaf, "weight_ih_l", 11) || !strncmp(leaf, "weight_hh_l", 11)) return MQ_KIND_RNN;
    if (!strncmp(leaf, "bias_ih_l", 9) || !strncmp(leaf, "bias_hh_l", 9)) return MQ_KIND_BIAS;
    /* nn.MultiheadAttention keeps its projections as parameters of the attention module */
    if (!strcmp(leaf, "in_proj_weight") || !strcmp(leaf, "q_proj_weight") ||
        !strcmp(leaf, "k_proj_weight") || !strcmp(leaf, "v_proj_weight"))
        return t->ndim == 2 ? MQ_KIND_LINEAR : MQ_KIND_OTHER;
    if (!strcmp(leaf, "in_proj_bias")) return MQ_KIND_BIAS;
    if (!strcmp(leaf, "bias")) return is_norm_name(n) ? MQ_KIND_NORM : MQ_KIND_BIAS;
    if (is_norm_name(n) && t->ndim <= 1) return MQ_KIND_NORM;
    if (is_embedding_name(n) && t->ndim == 2) return MQ_KIND_EMBEDDING;
    if (!strcmp(leaf, "weight") || !strcmp(leaf, "kernel")) {
        if (t->ndim == 2) return MQ_KIND_LINEAR;
        if (t->ndim >= 3 && t->ndim <= 5) return MQ_KIND_CONV;
        if (t->ndim == 1) return is_norm_name(n) ? MQ_KIND_NORM : MQ_KIND_OTHER;
    }
    return MQ_KIND_OTHER;
}
