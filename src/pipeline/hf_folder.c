/* Hugging Face model folders as output: the input's non-weight files copied, config.json
 * carrying the quantization_config, the shard index. */
#include "pipeline/hf_folder.h"
#include "io/json.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_MAX_BYTES ((uint64_t)64 << 20)

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

mq_status mq__hf_input_dir(mq_ctx *ctx, const char *in, char **dir) {
    *dir = NULL;
    if (is_dir(in)) {
        *dir = mq__strdup(ctx, in);
        return *dir ? MQ_OK : MQ_ERR_NOMEM;
    }
    const char *slash = strrchr(in, '/');
    char *d = slash ? mq__strndup(ctx, in, slash == in ? 1 : (size_t)(slash - in))
                    : mq__strdup(ctx, ".");
    if (!d) return MQ_ERR_NOMEM;
    /* an index's folder is the model; a lone file's only when it is a model folder */
    char *cfg = mq__path_join(ctx, d, "config.json");
    struct stat sb;
    bool model = cfg && (ends_with(in, ".index.json") || (stat(cfg, &sb) == 0 && S_ISREG(sb.st_mode)));
    mq__free(ctx, cfg);
    if (model) *dir = d;
    else mq__free(ctx, d);
    return MQ_OK;
}

/* Files that hold weights (the input's own, or other frameworks' copies of them) and their
 * indexes: the output has its own. */
static bool is_weight_file(const char *name) {
    static const char *const exts[] = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack",
                                       ".ckpt", ".gguf", ".index.json"};
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
        if (ends_with(name, exts[i])) return true;
    return false;
}

/* config.json with "quantization_config": cfg added as its last member. An input that already
 * has one is refused: it is quantized. */
static mq_status write_config(mq_ctx *ctx, const char *src, mq__folder *f, const char *cfg) {
    char *text = NULL;
    size_t len = 0;
    MQ_TRY(mq__read_small_file(ctx, src, CONFIG_MAX_BYTES, "config file", &text, &len));
    mq_json j;
    mq__json_init(&j, ctx, text, len, src, 0);
    mq_status st = mq__json_object_begin(&j);
    bool more = false, any = false;
    const char *key;
    size_t klen;
    while (st == MQ_OK && (st = mq__json_object_next(&j, &key, &klen, &more)) == MQ_OK && more) {
        any = true;
        if (!strcmp(key, "quantization_config")) {
            st = mq__fail(ctx, MQ_ERR_INVALID, "%s: already has a quantization_config (the model "
                          "is quantized)", src);
            break;
        }
        st = mq__json_skip(&j);
    }
    if (st == MQ_OK) st = mq__json_finish(&j);
    mq__json_free(&j);
    mq_buf out;
    mq__buf_init(&out, ctx);
    if (st == MQ_OK) {
        size_t end = len;
        while (end && text[end - 1] != '}') end--; /* the object's closing brace */
        size_t body = end - 1;
        while (body && (text[body - 1] == ' ' || text[body - 1] == '\n' || text[body - 1] == '\t' ||
                        text[body - 1] == '\r'))
            body--;
        st = mq__buf_append(&out, text, body);
        if (st == MQ_OK)
            st = mq__buf_printf(&out, "%s\n  \"quantization_config\": %s\n}\n", any ? "," : "", cfg);
    }
    if (st == MQ_OK) st = mq__folder_write_file(f, "config.json", out.data, out.len);
    mq__buf_free(&out);
    mq__free(ctx, text);
    return st;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

mq_status mq__hf_copy_files(mq_ctx *ctx, const char *dir, mq__folder *f, const char *hf_config) {
    DIR *d = opendir(dir);
    if (!d) return mq__fail(ctx, MQ_ERR_IO, "%s: cannot list the folder", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    mq_status st = MQ_OK;
    struct dirent *de;
    while (st == MQ_OK && (de = readdir(d))) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, ".."))) continue;
        if (is_weight_file(de->d_name)) continue;
        st = mq__grow(ctx, (void **)&names, &cap, n + 1, sizeof *names);
        if (st == MQ_OK && !(names[n] = mq__strdup(ctx, de->d_name))) st = MQ_ERR_NOMEM;
        if (st == MQ_OK) n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; st == MQ_OK && i < n; i++) {
        char *src = mq__path_join(ctx, dir, names[i]);
        struct stat sb;
        if (!src) st = MQ_ERR_NOMEM;
        /* regular files, also through links (a hub cache's snapshot links to its blobs);
         * sub-folders are not part of what loaders read */
        else if (stat(src, &sb) != 0 || !S_ISREG(sb.st_mode)) st = MQ_OK;
        else if (!strcmp(names[i], "config.json") && hf_config)
            st = write_config(ctx, src, f, hf_config);
        else st = mq__folder_copy_file(f, src, names[i]);
        mq__free(ctx, src);
    }
    for (size_t i = 0; i < n; i++) mq__free(ctx, names[i]);
    mq__free(ctx, names);
    return st;
}

mq_status mq__hf_write_index(mq_ctx *ctx, mq__folder *f, const mq_tensor_desc *outs,
                             const int *file_of, size_t nouts, char *const *files,
                             uint64_t total_size) {
    mq_buf b;
    mq__buf_init(&b, ctx);
    mq_status st = mq__buf_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n"
                                      "  \"weight_map\": {", (unsigned long long)total_size);
    for (size_t i = 0; st == MQ_OK && i < nouts; i++) {
        st = mq__buf_append(&b, i ? ",\n    " : "\n    ", i ? 6 : 5);
        if (st == MQ_OK) st = mq__json_write_string(&b, outs[i].name, strlen(outs[i].name));
        if (st == MQ_OK) st = mq__buf_append(&b, ": ", 2);
        const char *file = files[file_of[i]];
        if (st == MQ_OK) st = mq__json_write_string(&b, file, strlen(file));
    }
    if (st == MQ_OK) st = mq__buf_printf(&b, "\n  }\n}\n");
    if (st == MQ_OK)
        st = mq__folder_write_file(f, "model.safetensors.index.json", b.data, b.len);
    mq__buf_free(&b);
    return st;
}
