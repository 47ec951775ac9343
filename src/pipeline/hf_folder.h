/* Hugging Face model folders written by the pipeline (docs/FORMAT.md, "Model folders"). */
#ifndef MQ_HF_FOLDER_H
#define MQ_HF_FOLDER_H

#include "io/folder.h"

/* The folder whose other files go with the output: `in` itself when it is a folder, the
 * folder of an index, or of a single file that has a config.json beside it; else *dir NULL. */
MQ_HIDDEN mq_status mq__hf_input_dir(mq_ctx *ctx, const char *in, char **dir);
/* Copies every regular file of `dir` except weight files and indexes into `f`, byte for byte;
 * config.json gets "quantization_config": hf_config appended (hf_config NULL: copied too). */
MQ_HIDDEN mq_status mq__hf_copy_files(mq_ctx *ctx, const char *dir, mq__folder *f,
                                      const char *hf_config);
/* model.safetensors.index.json: output tensor i lies in files[file_of[i]]. */
MQ_HIDDEN mq_status mq__hf_write_index(mq_ctx *ctx, mq__folder *f, const mq_tensor_desc *outs,
                                       const int *file_of, size_t nouts, char *const *files,
                                       uint64_t total_size);

#endif
