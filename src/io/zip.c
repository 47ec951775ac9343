/* Zip archive reader for stored (uncompressed) entries, ZIP64 included. The archive is
 * trusted for nothing: counts, sizes and offsets are checked with overflow-safe arithmetic,
 * every central directory entry is checked against its local header, and entries may not
 * overlap or reach outside the file. */
#include "io/zip.h"

#include <stdlib.h>
#include <string.h>

#define SIG_LOCAL     0x04034b50u
#define SIG_CENTRAL   0x02014b50u
#define SIG_EOCD      0x06054b50u
#define SIG_EOCD64    0x06064b50u
#define SIG_LOCATOR64 0x07064b50u
#define EOCD_LEN      22u
#define EOCD64_LEN    56u
#define LOCATOR64_LEN 20u
#define CENTRAL_LEN   46u
#define LOCAL_LEN     30u

/* [off, off + n) lies inside [0, len). */
static bool in_range(uint64_t off, uint64_t n, uint64_t len) {
    return off <= len && n <= len - off;
}

/* Name as printable text for messages (bounded; odd bytes shown as '?'). */
static void printable(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[k++] = (ch >= 0x20 && ch != 0x7F) ? (char)ch : '?';
    }
    if (n > 0 && k + 4 >= cap) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = 0;
}

static bool name_is_safe(const char *s, size_t n) {
    if (n == 0 || s[0] == '/' || s[0] == '\\') return false;
    if (n >= 2 && s[1] == ':') return false; /* drive letter */
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] == 0) return false;
        if (i == n || s[i] == '/' || s[i] == '\\') {
            if (i - start == 2 && s[start] == '.' && s[start + 1] == '.') return false;
            start = i + 1;
        }
    }
    return true;
}

static int cmp_name(const void *a, const void *b) {
    const mq_zip_entry *x = *(const mq_zip_entry *const *)a, *y = *(const mq_zip_entry *const *)b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static int cmp_offset(const void *a, const void *b) {
    const mq_zip_entry *x = *(const mq_zip_entry *const *)a, *y = *(const mq_zip_entry *const *)b;
    return x->header_off < y->header_off ? -1 : x->header_off > y->header_off;
}

typedef struct eocd {
    uint64_t count, cd_size, cd_off;
    uint64_t end; /* where the central directory must end (start of the EOCD records) */
} eocd;

static mq_status find_eocd(mq_ctx *ctx, const char *path, const uint8_t *d, size_t len, eocd *e) {
    if (len < EOCD_LEN)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: not a zip archive (too short)", path);
    size_t lowest = len - EOCD_LEN > 0xFFFF ? len - EOCD_LEN - 0xFFFF : 0;
    size_t pos = len - EOCD_LEN;
    for (;; pos--) {
        if (mq__load_le32(d + pos) == SIG_EOCD &&
            pos + EOCD_LEN + mq__load_le16(d + pos + 20) <= len)
            break;
        if (pos == lowest)
            return mq__fail(ctx, MQ_ERR_FORMAT,
                            "%s: no zip end-of-central-directory record (truncated file?)", path);
    }
    const uint8_t *r = d + pos;
    uint16_t disk = mq__load_le16(r + 4), cd_disk = mq__load_le16(r + 6);
    uint16_t n_disk = mq__load_le16(r + 8), n_total = mq__load_le16(r + 10);
    uint32_t cd_size = mq__load_le32(r + 12), cd_off = mq__load_le32(r + 16);
    e->count = n_total;
    e->cd_size = cd_size;
    e->cd_off = cd_off;
    e->end = pos;
    bool need64 = n_total == 0xFFFF || n_disk == 0xFFFF || cd_size == 0xFFFFFFFFu ||
                  cd_off == 0xFFFFFFFFu || disk == 0xFFFF || cd_disk == 0xFFFF;
    bool has_locator =
        pos >= LOCATOR64_LEN && mq__load_le32(d + pos - LOCATOR64_LEN) == SIG_LOCATOR64;
    if (need64 || has_locator) {
        if (!has_locator)
            return mq__fail(ctx, MQ_ERR_FORMAT,
                            "%s: ZIP64 end-of-central-directory locator missing", path);
        const uint8_t *loc = d + pos - LOCATOR64_LEN;
        uint64_t off64 = mq__load_le64(loc + 8);
        if (mq__load_le32(loc + 4) != 0 || mq__load_le32(loc + 16) > 1)
            return mq__fail(ctx, MQ_ERR_UNSUPPORTED,
                            "%s: multi-disk zip archives are not supported", path);
        if (!in_range(off64, EOCD64_LEN, pos - LOCATOR64_LEN) ||
            mq__load_le32(d + off64) != SIG_EOCD64)
            return mq__fail(ctx, MQ_ERR_FORMAT,
                            "%s: ZIP64 end-of-central-directory record missing "
                            "or outside the file",
                            path);
        const uint8_t *r64 = d + off64;
        disk = mq__load_le32(r64 + 16) ? 1 : 0;
        cd_disk = mq__load_le32(r64 + 20) ? 1 : 0;
        uint64_t on_disk = mq__load_le64(r64 + 24);
        e->count = mq__load_le64(r64 + 32);
        e->cd_size = mq__load_le64(r64 + 40);
        e->cd_off = mq__load_le64(r64 + 48);
        e->end = off64;
        if (on_disk != e->count)
            return mq__fail(ctx, MQ_ERR_UNSUPPORTED,
                            "%s: multi-disk zip archives are not supported", path);
    } else if (n_disk != n_total) {
        disk = 1;
    }
    if (disk || cd_disk)
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                        path);
    if (!in_range(e->cd_off, e->cd_size, e->end) || e->cd_off + e->cd_size != e->end)
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip central directory (offset %llu, %llu bytes) does not end where "
                        "the end record starts (%llu)",
                        path, (unsigned long long)e->cd_off, (unsigned long long)e->cd_size,
                        (unsigned long long)e->end);
    if (e->count > e->cd_size / CENTRAL_LEN || e->count > MQ_ZIP_MAX_ENTRIES)
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip archive claims %llu entries, more than its central directory "
                        "(%llu bytes) can hold",
                        path, (unsigned long long)e->count, (unsigned long long)e->cd_size);
    return MQ_OK;
}

/* Reads the ZIP64 extra field of a central entry, replacing the fields that are saturated. */
static bool read_zip64_extra(const uint8_t *x, size_t xlen, uint64_t *usize, uint64_t *csize,
                             uint64_t *lho, bool need_u, bool need_c, bool need_o) {
    size_t i = 0;
    while (i + 4 <= xlen) {
        uint16_t id = mq__load_le16(x + i), n = mq__load_le16(x + i + 2);
        if (n > xlen - i - 4) return false;
        if (id == 0x0001) {
            const uint8_t *f = x + i + 4;
            size_t k = 0;
            if (need_u) {
                if (k + 8 > n) return false;
                *usize = mq__load_le64(f + k);
                k += 8;
            }
            if (need_c) {
                if (k + 8 > n) return false;
                *csize = mq__load_le64(f + k);
                k += 8;
            }
            if (need_o) {
                if (k + 8 > n) return false;
                *lho = mq__load_le64(f + k);
                k += 8;
            }
            return true;
        }
        i += 4 + (size_t)n;
    }
    return !(need_u || need_c || need_o);
}

static mq_status read_entry(mq_ctx *ctx, const char *path, const uint8_t *d, size_t len,
                            const eocd *e, uint64_t *cursor, mq_zip_entry *out, size_t index) {
    uint64_t p = *cursor;
    if (!in_range(p, CENTRAL_LEN, e->end) || mq__load_le32(d + p) != SIG_CENTRAL)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: zip central directory entry %zu is malformed",
                        path, index);
    const uint8_t *c = d + p;
    uint16_t flags = mq__load_le16(c + 8), method = mq__load_le16(c + 10);
    uint32_t crc = mq__load_le32(c + 16);
    uint64_t csize = mq__load_le32(c + 20), usize = mq__load_le32(c + 24);
    uint16_t nlen = mq__load_le16(c + 28), xlen = mq__load_le16(c + 30),
             clen = mq__load_le16(c + 32);
    uint16_t disk = mq__load_le16(c + 34);
    uint64_t lho = mq__load_le32(c + 42);
    uint64_t total = (uint64_t)CENTRAL_LEN + nlen + xlen + clen;
    if (!in_range(p, total, e->end))
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip central directory entry %zu runs past the directory", path, index);
    const char *name = (const char *)c + CENTRAL_LEN;
    char shown[160];
    printable(name, nlen, shown, sizeof shown);
    if (!read_zip64_extra(c + CENTRAL_LEN + nlen, xlen, &usize, &csize, &lho, usize == 0xFFFFFFFFu,
                          csize == 0xFFFFFFFFu, lho == 0xFFFFFFFFu))
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: zip entry '%s': malformed ZIP64 extra field", path,
                        shown);
    if (!name_is_safe(name, nlen))
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip entry '%s': unsafe name (empty, absolute, NUL or '..')", path,
                        shown);
    if (flags & 0x41)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: zip entry '%s' is encrypted", path, shown);
    if (method == 0 && csize != usize)
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip entry '%s' is stored but its sizes differ (%llu vs %llu)", path,
                        shown, (unsigned long long)csize, (unsigned long long)usize);
    if (disk != 0 && disk != 0xFFFF)
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: zip entry '%s' is on another disk", path,
                        shown);
    /* the local header */
    if (!in_range(lho, LOCAL_LEN, e->cd_off) || mq__load_le32(d + lho) != SIG_LOCAL)
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip entry '%s': local header at %llu is missing or outside the file",
                        path, shown, (unsigned long long)lho);
    const uint8_t *l = d + lho;
    uint16_t lflags = mq__load_le16(l + 6), lmethod = mq__load_le16(l + 8);
    uint16_t lnlen = mq__load_le16(l + 26), lxlen = mq__load_le16(l + 28);
    if (lnlen != nlen || !in_range(lho + LOCAL_LEN, lnlen, e->cd_off) ||
        memcmp(l + LOCAL_LEN, name, nlen) != 0)
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip entry '%s': local header name differs from the central directory",
                        path, shown);
    if (lmethod != method || (lflags & 0x41))
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip entry '%s': local header method or flags differ", path, shown);
    if (!(lflags & 0x08)) { /* no data descriptor: the local sizes must agree */
        uint32_t lcrc = mq__load_le32(l + 14);
        uint64_t lcs = mq__load_le32(l + 18), lus = mq__load_le32(l + 22);
        bool zip64 = lcs == 0xFFFFFFFFu || lus == 0xFFFFFFFFu;
        if (lcrc != crc || (!zip64 && (lcs != csize || lus != usize)))
            return mq__fail(ctx, MQ_ERR_FORMAT,
                            "%s: zip entry '%s': local header CRC or sizes differ from the central "
                            "directory",
                            path, shown);
    }
    uint64_t data_off = lho + LOCAL_LEN + lnlen + lxlen; /* each term < 2^32 + small */
    if (!in_range(data_off, csize, e->cd_off))
        return mq__fail(ctx, MQ_ERR_FORMAT,
                        "%s: zip entry '%s': %llu bytes at offset %llu reach past the entries' "
                        "area (%llu bytes)",
                        path, shown, (unsigned long long)csize, (unsigned long long)data_off,
                        (unsigned long long)e->cd_off);
    (void)len;
    *out = (mq_zip_entry){name, nlen, lho, data_off, csize, usize, crc, method};
    *cursor = p + total;
    return MQ_OK;
}

static mq_status check_layout(mq_ctx *ctx, const char *path, mq_zip *z) {
    size_t n = z->n;
    const mq_zip_entry **tmp = (const mq_zip_entry **)mq__malloc(ctx, (n ? n : 1) * sizeof *tmp);
    if (!tmp) return MQ_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) tmp[i] = &z->entries[i];
    qsort(tmp, n, sizeof *tmp, cmp_offset);
    mq_status st = MQ_OK;
    for (size_t i = 1; i < n && st == MQ_OK; i++) {
        const mq_zip_entry *a = tmp[i - 1], *b = tmp[i];
        if (a->data_off + a->size > b->header_off) {
            char sa[160], sb[160];
            printable(a->name, a->name_len, sa, sizeof sa);
            printable(b->name, b->name_len, sb, sizeof sb);
            st =
                mq__fail(ctx, MQ_ERR_FORMAT, "%s: zip entries '%s' and '%s' overlap", path, sa, sb);
        }
    }
    mq__free(ctx, tmp);
    if (st != MQ_OK) return st;
    for (size_t i = 0; i < n; i++) z->by_name[i] = &z->entries[i];
    qsort(z->by_name, n, sizeof *z->by_name, cmp_name);
    for (size_t i = 1; i < n; i++) {
        if (cmp_name(&z->by_name[i - 1], &z->by_name[i]) == 0) {
            char s[160];
            printable(z->by_name[i]->name, z->by_name[i]->name_len, s, sizeof s);
            return mq__fail(ctx, MQ_ERR_FORMAT, "%s: zip entry '%s' appears twice", path, s);
        }
    }
    return MQ_OK;
}

mq_status mq__zip_open(mq_ctx *ctx, const char *path, const uint8_t *data, size_t len,
                       mq_zip *out) {
    memset(out, 0, sizeof *out);
    eocd e = {0, 0, 0, 0};
    MQ_TRY(find_eocd(ctx, path, data, len, &e));
    size_t n = (size_t)e.count;
    out->data = data;
    out->len = len;
    out->entries = (mq_zip_entry *)mq__calloc(ctx, n ? n : 1, sizeof *out->entries);
    out->by_name = (const mq_zip_entry **)mq__calloc(ctx, n ? n : 1, sizeof *out->by_name);
    if (!out->entries || !out->by_name) {
        mq__zip_close(ctx, out);
        return MQ_ERR_NOMEM;
    }
    uint64_t cursor = e.cd_off;
    mq_status st = MQ_OK;
    for (size_t i = 0; i < n && st == MQ_OK; i++)
        st = read_entry(ctx, path, data, len, &e, &cursor, &out->entries[i], i);
    out->n = n;
    if (st == MQ_OK) st = check_layout(ctx, path, out);
    if (st != MQ_OK) mq__zip_close(ctx, out);
    return st;
}

void mq__zip_close(mq_ctx *ctx, mq_zip *z) {
    mq__free(ctx, z->entries);
    mq__free(ctx, (void *)z->by_name);
    memset(z, 0, sizeof *z);
}

mq_status mq__zip_stored(mq_ctx *ctx, const char *path, const mq_zip_entry *e) {
    if (e->method == 0) return MQ_OK;
    char shown[160];
    printable(e->name, e->name_len, shown, sizeof shown);
    return mq__fail(ctx, MQ_ERR_FORMAT,
                    "%s: zip entry '%s' is compressed (method %u); only stored entries are "
                    "supported (torch.save writes them stored)",
                    path, shown, e->method);
}

const mq_zip_entry *mq__zip_find(const mq_zip *z, const char *name, size_t name_len) {
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const mq_zip_entry *m = z->by_name[mid];
        size_t k = m->name_len < name_len ? m->name_len : name_len;
        int c = memcmp(m->name, name, k);
        if (!c) c = m->name_len < name_len ? -1 : m->name_len > name_len;
        if (!c) return m;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
