/* Sharded checkpoints (`*.index.json` with a "weight_map") and folders.
 *
 * Index rules:
 *  - "weight_map" (required): tensor name -> shard file, relative to the index's folder.
 *    A shard path must not be empty or absolute, must have no ".." component, and must
 *    resolve (realpath, so through symlinks) to a file inside that folder.
 *  - "metadata" (optional): string, number and boolean values become model metadata (numbers
 *    as written, e.g. "total_size"); nested values are ignored. Shard __metadata__ entries are
 *    merged after it (a later shard's value wins on a shared key).
 *  - Shards are read in file-name order (model-00001-of-N, model-00002-of-N, ...), each in its
 *    own file order. Every tensor of a shard must be listed in weight_map for that shard, and
 *    every weight_map entry must be found in its shard: a mismatch is a format error.
 *  - Shards are safetensors or PyTorch zip files (by content), all of one kind.
 *
 * Folder rules (mq__resolve_dir): model.safetensors.index.json, else a single
 * *.safetensors.index.json, else a single *.index.json; else a single *.safetensors; else a
 * single *.bin / *.pt / *.pth (PyTorch); anything else is an error listing what was found. */
#include "io/json.h"
#include "io/folder.h"
#include "io/model_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_MAX_BYTES 100000000u

typedef struct shard_ref {
    char *file;        /* as written in the index */
    char *real;        /* resolved path inside the folder */
} shard_ref;

typedef struct wm_entry {
    size_t shard;      /* index into shards */
    bool found;
    char *name;
} wm_entry;

typedef struct index_reader {
    mq_model *m;
    mq_ctx *ctx;
    const char *path;
    char *dir;         /* folder of the index */
    char *real_dir;    /* its realpath */
    mq_json j;
    mq_strset shard_ids;   /* file -> shard index */
    mq_strset names;       /* tensor -> wm index */
    shard_ref *shards;
    size_t nshards, cap_shards;
    wm_entry *wm;
    size_t nwm, cap_wm;
} index_reader;

static mq_status read_whole_file(mq_ctx *ctx, const char *path, char **out, size_t *len) {
    return mq__read_small_file(ctx, path, INDEX_MAX_BYTES, "index file", out, len);
}

static char *join_path(mq_ctx *ctx, const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    bool slash = a && dir[a - 1] == '/';
    char *p = (char *)mq__malloc(ctx, a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (!slash) p[a++] = '/';
    memcpy(p + a, name, b + 1);
    return p;
}

/* Checks a shard file name from the index and resolves it inside the folder. */
static mq_status check_shard_path(index_reader *r, size_t at, const char *file, size_t len,
                                  char **real_out) {
    if (len == 0) return mq__json_error_at(&r->j, at, "empty shard file name");
    if (memchr(file, 0, len))
        return mq__json_error_at(&r->j, at, "shard file name contains a NUL character");
    if (file[0] == '/')
        return mq__json_error_at(&r->j, at, "shard '%.200s' is an absolute path; shards must be "
                                 "inside the index's folder", file);
    for (const char *c = file; *c;) {
        const char *end = strchr(c, '/');
        size_t k = end ? (size_t)(end - c) : strlen(c);
        if (k == 2 && c[0] == '.' && c[1] == '.')
            return mq__json_error_at(&r->j, at, "shard '%.200s' has a '..' component; shards "
                                     "must be inside the index's folder", file);
        c += k + (end ? 1 : 0);
        if (!end) break;
    }
    char *full = join_path(r->ctx, r->dir, file);
    if (!full) return MQ_ERR_NOMEM;
    char *real = realpath(full, NULL);
    int e = errno;
    mq__free(r->ctx, full);
    if (!real)
        return mq__fail(r->ctx, MQ_ERR_IO, "%s: shard '%.200s': cannot open: %s", r->path, file,
                        strerror(e));
    size_t dl = strlen(r->real_dir);
    bool inside = !strncmp(real, r->real_dir, dl) &&
                  (real[dl] == '/' || (dl > 0 && r->real_dir[dl - 1] == '/'));
    if (!inside) {
        free(real);
        return mq__json_error_at(&r->j, at, "shard '%.200s' resolves outside the index's folder "
                                 "(through a symbolic link)", file);
    }
    *real_out = mq__strdup(r->ctx, real);
    free(real);
    return *real_out ? MQ_OK : MQ_ERR_NOMEM;
}

static mq_status parse_weight_map(index_reader *r) {
    mq_json *j = &r->j;
    size_t at = mq__json_offset(j);
    if (mq__json_peek(j) != MQ_JSON_OBJECT)
        return mq__json_error_at(j, at, "weight_map must be an object of tensor -> shard file");
    MQ_TRY(mq__json_object_begin(j));
    for (;;) {
        const char *k, *v;
        size_t klen, vlen;
        bool more, added;
        MQ_TRY(mq__json_object_next(j, &k, &klen, &more));
        if (!more) return MQ_OK;
        at = mq__json_offset(j);
        if (memchr(k, 0, klen)) return mq__json_error_at(j, at, "tensor name contains a NUL");
        MQ_TRY(mq__strset_add(&r->names, k, klen, (long)r->nwm, &added));
        if (!added)
            return mq__json_error_at(j, at, "duplicate weight_map entry '%.200s'", k);
        MQ_TRY(mq__grow(r->ctx, (void **)&r->wm, &r->cap_wm, r->nwm + 1, sizeof *r->wm));
        wm_entry *w = &r->wm[r->nwm];
        w->found = false;
        w->name = mq__strndup(r->ctx, k, klen);
        if (!w->name) return MQ_ERR_NOMEM;
        r->nwm++;
        if (mq__json_peek(j) != MQ_JSON_STRING)
            return mq__json_error_at(j, at, "weight_map value of '%.200s' must be a file name",
                                     w->name);
        MQ_TRY(mq__json_string(j, &v, &vlen));
        long id = mq__strset_get(&r->shard_ids, v, vlen);
        if (id < 0) {
            char *real = NULL;
            MQ_TRY(check_shard_path(r, at, v, vlen, &real));
            mq_status st = mq__grow(r->ctx, (void **)&r->shards, &r->cap_shards, r->nshards + 1,
                                    sizeof *r->shards);
            if (st != MQ_OK) {
                mq__free(r->ctx, real);
                return st;
            }
            r->shards[r->nshards] = (shard_ref){mq__strndup(r->ctx, v, vlen), real};
            if (!r->shards[r->nshards++].file) return MQ_ERR_NOMEM;
            id = (long)r->nshards - 1;
            MQ_TRY(mq__strset_add(&r->shard_ids, v, vlen, id, &added));
        }
        w->shard = (size_t)id;
    }
}

static mq_status parse_index_metadata(index_reader *r) {
    mq_json *j = &r->j;
    if (mq__json_peek(j) != MQ_JSON_OBJECT) return mq__json_skip(j);
    MQ_TRY(mq__json_object_begin(j));
    for (;;) {
        const char *k;
        size_t klen;
        bool more;
        MQ_TRY(mq__json_object_next(j, &k, &klen, &more));
        if (!more) return MQ_OK;
        /* the key buffer is reused by nested objects: keep a copy */
        char *key = mq__strndup(r->ctx, k, klen);
        if (!key) return MQ_ERR_NOMEM;
        const char *v = NULL;
        size_t vlen = 0;
        bool b;
        mq_json_type t = mq__json_peek(j);
        mq_status st;
        if (t == MQ_JSON_STRING) st = mq__json_string(j, &v, &vlen);
        else if (t == MQ_JSON_NUMBER) st = mq__json_number_text(j, &v, &vlen);
        else if (t == MQ_JSON_BOOL) {
            st = mq__json_literal(j, &t, &b);
            v = b ? "true" : "false";
            vlen = strlen(v);
        } else st = mq__json_skip(j);
        if (st == MQ_OK && v && !memchr(key, 0, klen) && !memchr(v, 0, vlen))
            st = mq__model_set_meta(r->m, key, klen, v, vlen);
        mq__free(r->ctx, key);
        MQ_TRY(st);
    }
}

static mq_status parse_index(index_reader *r) {
    mq_json *j = &r->j;
    MQ_TRY(mq__json_object_begin(j));
    bool have_map = false, have_meta = false;
    for (;;) {
        const char *k;
        size_t klen;
        bool more;
        MQ_TRY(mq__json_object_next(j, &k, &klen, &more));
        if (!more) break;
        size_t at = mq__json_offset(j);
        if (!strcmp(k, "weight_map") && klen == 10) {
            if (have_map) return mq__json_error_at(j, at, "duplicate weight_map");
            have_map = true;
            MQ_TRY(parse_weight_map(r));
        } else if (!strcmp(k, "metadata") && klen == 8) {
            if (have_meta) return mq__json_error_at(j, at, "duplicate metadata");
            have_meta = true;
            MQ_TRY(parse_index_metadata(r));
        } else {
            MQ_TRY(mq__json_skip(j));
        }
    }
    MQ_TRY(mq__json_finish(j));
    if (!have_map)
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: not a sharded checkpoint index: no "
                        "\"weight_map\"", r->path);
    return MQ_OK;
}

static bool is_zip(const char *path) {
    uint8_t head[4] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t got = read(fd, head, 4);
    close(fd);
    return got == 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4;
}

static int by_file(const void *a, const void *b, void *shards) {
    const shard_ref *s = (const shard_ref *)shards;
    return strcmp(s[*(const size_t *)a].file, s[*(const size_t *)b].file);
}

/* Reads the shards in file-name order and checks them against weight_map. */
static mq_status load_shards(index_reader *r) {
    mq_model *m = r->m;
    size_t *order = (size_t *)mq__malloc(r->ctx, (r->nshards ? r->nshards : 1) * sizeof *order);
    if (!order) return MQ_ERR_NOMEM;
    for (size_t i = 0; i < r->nshards; i++) order[i] = i;
    if (r->nshards) qsort_r(order, r->nshards, sizeof *order, by_file, r->shards);
    mq_status st = MQ_OK;
    mq_format kind = MQ_FORMAT_AUTO;
    for (size_t o = 0; st == MQ_OK && o < r->nshards; o++) {
        size_t s = order[o];
        const shard_ref *sh = &r->shards[s];
        mq_format f = is_zip(sh->real) ? MQ_FORMAT_PYTORCH : MQ_FORMAT_SAFETENSORS;
        if (kind != MQ_FORMAT_AUTO && f != kind) {
            st = mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: shard '%.200s' is %s but earlier shards are "
                          "%s", r->path, sh->file, mq_format_name(f), mq_format_name(kind));
            break;
        }
        kind = f;
        size_t before = m->ntensors;
        st = f == MQ_FORMAT_PYTORCH ? mq__pytorch_read(m, sh->real, NULL)
                                    : mq__safetensors_read(m, sh->real);
        for (size_t i = before; st == MQ_OK && i < m->ntensors; i++) {
            const char *name = m->tensors[i].name;
            long w = mq__strset_get(&r->names, name, strlen(name));
            if (w < 0)
                st = mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: tensor '%.200s' of shard '%.200s' is "
                              "not listed in weight_map", r->path, name, sh->file);
            else if (r->wm[w].shard != s)
                st = mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: tensor '%.200s' is in shard '%.200s' "
                              "but weight_map puts it in '%.200s'", r->path, name, sh->file,
                              r->shards[r->wm[w].shard].file);
            else r->wm[w].found = true;
        }
    }
    mq__free(r->ctx, order);
    if (kind != MQ_FORMAT_AUTO) m->format = kind;
    for (size_t i = 0; st == MQ_OK && i < r->nwm; i++)
        if (!r->wm[i].found)
            st = mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: tensor '%.200s' is listed in weight_map "
                          "but missing from shard '%.200s'", r->path, r->wm[i].name,
                          r->shards[r->wm[i].shard].file);
    return st;
}

mq_status mq__sharded_read(mq_model *m, const char *index_path) {
    mq_ctx *ctx = m->ctx;
    index_reader r;
    memset(&r, 0, sizeof r);
    r.m = m;
    r.ctx = ctx;
    r.path = index_path;
    mq__strset_init(&r.shard_ids, ctx);
    mq__strset_init(&r.names, ctx);
    char *text = NULL;
    size_t len = 0;
    mq_status st = read_whole_file(ctx, index_path, &text, &len);
    if (st == MQ_OK) {
        const char *slash = strrchr(index_path, '/');
        r.dir = slash ? mq__strndup(ctx, index_path, slash == index_path ? 1 : (size_t)(slash - index_path))
                      : mq__strdup(ctx, ".");
        if (!r.dir) st = MQ_ERR_NOMEM;
    }
    if (st == MQ_OK) {
        char *rd = realpath(r.dir, NULL);
        if (!rd) st = mq__fail(ctx, MQ_ERR_IO, "%s: cannot resolve its folder: %s", index_path,
                               strerror(errno));
        else {
            r.real_dir = mq__strdup(ctx, rd);
            free(rd);
            if (!r.real_dir) st = MQ_ERR_NOMEM;
        }
    }
    mq__json_init(&r.j, ctx, text, len, index_path, 0);
    if (st == MQ_OK) {
        size_t bad = mq__utf8_check(text, len);
        if (bad != len)
            st = mq__fail(ctx, MQ_ERR_FORMAT, "%s: at byte %zu: not valid UTF-8", index_path, bad);
    }
    if (st == MQ_OK) st = parse_index(&r);
    if (st == MQ_OK) st = load_shards(&r);
    mq__json_free(&r.j);
    for (size_t i = 0; i < r.nshards; i++) {
        mq__free(ctx, r.shards[i].file);
        mq__free(ctx, r.shards[i].real);
    }
    for (size_t i = 0; i < r.nwm; i++) mq__free(ctx, r.wm[i].name);
    mq__free(ctx, r.shards);
    mq__free(ctx, r.wm);
    mq__strset_free(&r.shard_ids);
    mq__strset_free(&r.names);
    mq__free(ctx, r.dir);
    mq__free(ctx, r.real_dir);
    mq__free(ctx, text);
    return st;
}

/* ---- folders --------------------------------------------------------------------------- */

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct name_list {
    char **items;
    size_t n, cap;
} name_list;

static void list_free(mq_ctx *ctx, name_list *l) {
    for (size_t i = 0; i < l->n; i++) mq__free(ctx, l->items[i]);
    mq__free(ctx, l->items);
}

/* Regular files (symlinks followed) of dir, sorted by name. */
static mq_status list_dir(mq_ctx *ctx, const char *dir, name_list *out) {
    DIR *d = opendir(dir);
    if (!d) return mq__fail(ctx, MQ_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    mq_status st = MQ_OK;
    struct dirent *e;
    while (st == MQ_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *full = join_path(ctx, dir, e->d_name);
        if (!full) {
            st = MQ_ERR_NOMEM;
            break;
        }
        struct stat sb;
        bool reg = stat(full, &sb) == 0 && S_ISREG(sb.st_mode);
        mq__free(ctx, full);
        if (!reg) continue;
        st = mq__grow(ctx, (void **)&out->items, &out->cap, out->n + 1, sizeof *out->items);
        if (st == MQ_OK) {
            out->items[out->n] = mq__strdup(ctx, e->d_name);
            if (!out->items[out->n]) st = MQ_ERR_NOMEM;
            else out->n++;
        }
    }
    closedir(d);
    if (out->n) qsort(out->items, out->n, sizeof *out->items, by_name);
    return st;
}

/* "a, b, c" of the names matching the filter (NULL: all), at most 8 then "...". */
static void describe(const name_list *l, bool (*keep)(const char *), char *buf, size_t cap) {
    size_t used = 0, shown = 0, total = 0;
    buf[0] = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (keep && !keep(l->items[i])) continue;
        total++;
        if (shown == 8) continue;
        int k = snprintf(buf + used, cap - used, "%s%s", shown ? ", " : "", l->items[i]);
        if (k < 0 || (size_t)k >= cap - used) break;
        used += (size_t)k;
        shown++;
    }
    if (total > shown && used + 8 < cap) snprintf(buf + used, cap - used, ", ...");
    if (!total) snprintf(buf, cap, "nothing");
}

static bool is_index(const char *s) { return has_suffix(s, ".index.json"); }
static bool is_st_index(const char *s) { return has_suffix(s, ".safetensors.index.json"); }
static bool is_st(const char *s) { return has_suffix(s, ".safetensors"); }
static bool is_pt(const char *s) {
    return has_suffix(s, ".bin") || has_suffix(s, ".pt") || has_suffix(s, ".pth");
}

/* The single name matching keep, or NULL; *count gets the number of matches. */
static const char *single(const name_list *l, bool (*keep)(const char *), size_t *count) {
    const char *found = NULL;
    *count = 0;
    for (size_t i = 0; i < l->n; i++)
        if (keep(l->items[i])) found = l->items[i], (*count)++;
    return *count == 1 ? found : NULL;
}

mq_status mq__resolve_dir(mq_ctx *ctx, const char *dir, char **path, mq_format *fmt) {
    *path = NULL;
    name_list l = {0};
    mq_status st = list_dir(ctx, dir, &l);
    const char *pick = NULL;
    char found[600];
    size_t n_idx = 0, n_st_idx = 0, n_st = 0, n_pt = 0;
    if (st == MQ_OK) {
        for (size_t i = 0; i < l.n && !pick; i++)
            if (!strcmp(l.items[i], "model.safetensors.index.json")) pick = l.items[i];
        *fmt = MQ_FORMAT_SAFETENSORS;
        if (!pick) pick = single(&l, is_st_index, &n_st_idx);
        if (!pick && !n_st_idx) pick = single(&l, is_index, &n_idx);
        if (!pick && !n_st_idx && !n_idx) pick = single(&l, is_st, &n_st);
        if (!pick && !n_st_idx && !n_idx && !n_st) {
            pick = single(&l, is_pt, &n_pt);
            *fmt = MQ_FORMAT_PYTORCH;
        }
        if (!pick) {
            bool (*what)(const char *) = n_st_idx ? is_st_index : n_idx ? is_index
                                       : n_st ? is_st : n_pt ? is_pt : NULL;
            describe(&l, what, found, sizeof found);
            if (what)
                st = mq__fail(ctx, MQ_ERR_FORMAT, "%s: several candidate checkpoints and no "
                              "model.safetensors.index.json to choose: %s", dir, found);
            else
                st = mq__fail(ctx, MQ_ERR_FORMAT, "%s: no checkpoint in this folder (looked for "
                              "*.index.json, *.safetensors, *.bin, *.pt, *.pth); found: %s", dir,
                              found);
        }
    }
    if (st == MQ_OK) {
        *path = join_path(ctx, dir, pick);
        if (!*path) st = MQ_ERR_NOMEM;
    }
    list_free(ctx, &l);
    return st;
}
