/* The quantization settings other tools store beside their weights: config.json's
 * `quantization_config` (compressed-tensors, GPTQ), GPTQ's quantize_config.json, or the same
 * JSON in a safetensors file's `quantization_config` metadata entry. Readers use them where
 * the tensors alone are ambiguous (bit width, group size, GPTQ v1 or v2). */
#ifndef MQ_HF_CONFIG_H
#define MQ_HF_CONFIG_H

#include "common/internal.h"

typedef enum mq__strategy {
    MQ__STRAT_UNKNOWN = 0, MQ__STRAT_TENSOR, MQ__STRAT_CHANNEL, MQ__STRAT_GROUP,
    MQ__STRAT_TOKEN, MQ__STRAT_OTHER
} mq__strategy;

/* compressed-tensors QuantizationArgs (the fields readers need). */
typedef struct mq__qargs {
    int present;
    int num_bits;          /* 0: not given */
    int is_float;          /* type "float" */
    int symmetric;         /* -1: not given */
    mq__strategy strategy;
    int64_t group_size;    /* 0: not given */
    int dynamic;
} mq__qargs;

typedef struct mq__qgroup {
    char *name;
    char **targets;
    size_t ntargets;
    char *format;          /* NULL: the top-level format */
    mq__qargs weights, input;
} mq__qgroup;

typedef enum mq__qmethod { MQ__QM_NONE = 0, MQ__QM_CT, MQ__QM_GPTQ, MQ__QM_OTHER } mq__qmethod;

typedef struct mq__hfconfig {
    mq__qmethod method;
    char *source;          /* file (or metadata entry) the settings came from */
    char *format;          /* compressed-tensors top-level format */
    mq__qgroup *groups;
    size_t ngroups;
    char **ignore;
    size_t nignore;
    /* GPTQ */
    int bits;              /* 0: not given */
    int64_t group_size;    /* -1: one group per row; 0: not given */
    int sym;               /* -1: not given */
    int desc_act;
    int gptq_v2;           /* checkpoint_format "gptq_v2": qzeros hold the zero point itself */
    mq_dtype torch_dtype;  /* config.json torch_dtype / dtype, or MQ_DTYPE_INVALID */
} mq__hfconfig;

/* Fills *out from what accompanies the checkpoint at `path` (as given to mq_model_open):
 * the `quantization_config` metadata of `m` when it names compressed-tensors or GPTQ, else
 * config.json beside the checkpoint (in the folder, or in the file's folder), plus
 * quantize_config.json for GPTQ. Nothing found: method MQ__QM_NONE and MQ_OK. Unreadable
 * JSON: MQ_ERR_FORMAT naming the file. */
MQ_HIDDEN mq_status mq__hfconfig_load(mq_ctx *ctx, const mq_model *m, const char *path,
                                      mq__hfconfig *out);
MQ_HIDDEN void mq__hfconfig_free(mq_ctx *ctx, mq__hfconfig *c);

/* The compressed-tensors group whose targets match module `name` (an exact name before a
 * "re:" pattern, a pattern before a class name such as "Linear"), or NULL; *ignored is set
 * when the name is in the ignore list. */
MQ_HIDDEN const mq__qgroup *mq__hfconfig_match(const mq__hfconfig *c, const char *name,
                                               int *ignored);
/* Python-style `re.match` of a "re:" pattern (the part after "re:") at the start of name:
 * \d, \w, \s and (?:...) are understood. 1 match, 0 no match, -1 a pattern it cannot use. */
MQ_HIDDEN int mq__pattern_match(const char *pattern, const char *name);

#endif
