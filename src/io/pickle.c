/* Bounded, non-executing pickle interpreter for torch.save state dicts (see pickle.h).
 * Objects live in an arena whose size is bounded by the pickle's length; the stack, the MARK
 * depth and the memo are bounded too. Opcodes and globals outside the tables are rejected
 * with their byte offset. */
#include "io/pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- arena ------------------------------------------------------------------------- */

typedef struct pk_block {
    struct pk_block *next;
    size_t used, cap;
    max_align_t data[];
} pk_block;

struct mq_pk_arena {
    pk_block *head;
    uint64_t total, limit;
};

static void *arena_alloc(mq_ctx *ctx, mq_pk_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    pk_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > (64u << 10) ? n : (64u << 10);
        if (a->total + cap > a->limit) return NULL;
        b = (pk_block *)mq__malloc(ctx, sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void mq__pk_free(mq_ctx *ctx, mq_pk_arena *a) {
    if (!a) return;
    for (pk_block *b = a->head, *next; b; b = next) {
        next = b->next;
        mq__free(ctx, b);
    }
    mq__free(ctx, a);
}

/* ---- tables ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    mq_dtype dtype;
} storage_table[] = {
    {"FloatStorage", MQ_F32},     {"DoubleStorage", MQ_F64},       {"HalfStorage", MQ_F16},
    {"BFloat16Storage", MQ_BF16}, {"LongStorage", MQ_I64},         {"IntStorage", MQ_I32},
    {"ShortStorage", MQ_I16},     {"CharStorage", MQ_I8},          {"ByteStorage", MQ_U8},
    {"BoolStorage", MQ_BOOL},     {"ComplexFloatStorage", MQ_C64},
};

/* Storage classes PyTorch allows but that have no dtype here. */
static const char *const storage_unsupported[] = {
    "ComplexDoubleStorage", "QUInt8Storage",   "QInt8Storage",
    "QInt32Storage",        "QUInt4x2Storage", "QUInt2x4Storage",
};

static const struct {
    const char *name;
    mq_dtype dtype;
} dtype_table[] = {
    {"float32", MQ_F32},
    {"float", MQ_F32},
    {"float64", MQ_F64},
    {"double", MQ_F64},
    {"float16", MQ_F16},
    {"half", MQ_F16},
    {"bfloat16", MQ_BF16},
    {"int64", MQ_I64},
    {"long", MQ_I64},
    {"int32", MQ_I32},
    {"int", MQ_I32},
    {"int16", MQ_I16},
    {"short", MQ_I16},
    {"int8", MQ_I8},
    {"uint8", MQ_U8},
    {"bool", MQ_BOOL},
    {"complex64", MQ_C64},
    {"uint16", MQ_U16},
    {"uint32", MQ_U32},
    {"uint64", MQ_U64},
    {"float8_e4m3fn", MQ_F8_E4M3},
    {"float8_e5m2", MQ_F8_E5M2},
    {"float8_e8m0fnu", MQ_F8_E8M0},
};

static const struct {
    const char *name;
    mq_pk_global id;
} global_table[] = {
    {"collections.OrderedDict", MQ_G_ORDERED_DICT},
    {"torch._utils._rebuild_tensor", MQ_G_REBUILD_TENSOR},
    {"torch._utils._rebuild_tensor_v2", MQ_G_REBUILD_TENSOR_V2},
    {"torch._utils._rebuild_tensor_v3", MQ_G_REBUILD_TENSOR_V3},
    {"torch._utils._rebuild_parameter", MQ_G_REBUILD_PARAMETER},
    {"torch._utils._rebuild_parameter_with_state", MQ_G_REBUILD_PARAMETER_STATE},
    {"torch._tensor._rebuild_from_type_v2", MQ_G_REBUILD_FROM_TYPE_V2},
    {"torch.nn.parameter.Parameter", MQ_G_PARAMETER},
    {"torch.Tensor", MQ_G_TENSOR},
    {"torch.Size", MQ_G_SIZE},
    {"torch.device", MQ_G_DEVICE},
    {"torch.UntypedStorage", MQ_G_STORAGE_CLASS},
    {"torch.storage.UntypedStorage", MQ_G_STORAGE_CLASS},
    {"torch._utils._rebuild_sparse_tensor", MQ_G_UNSUPPORTED},
    {"torch._utils._rebuild_sparse_csr_tensor", MQ_G_UNSUPPORTED},
    {"torch._utils._rebuild_meta_tensor_no_storage", MQ_G_UNSUPPORTED},
    {"torch._utils._rebuild_qtensor", MQ_G_UNSUPPORTED},
    {"torch._utils._rebuild_nested_tensor", MQ_G_UNSUPPORTED},
    {"torch._utils._rebuild_wrapper_subclass", MQ_G_UNSUPPORTED},
    {"torch._utils._rebuild_device_tensor_from_cpu_tensor", MQ_G_UNSUPPORTED},
    {"torch._utils._rebuild_device_tensor_from_numpy", MQ_G_UNSUPPORTED},
    {"torch.serialization._get_layout", MQ_G_UNSUPPORTED},
};

const char *mq__pk_storage_name(mq_dtype dt) {
    for (size_t i = 0; i < sizeof storage_table / sizeof *storage_table; i++)
        if (storage_table[i].dtype == dt) return storage_table[i].name;
    return NULL;
}

/* ---- the machine ------------------------------------------------------------------- */

typedef struct pk_vm {
    mq_ctx *ctx;
    const char *where;
    const uint8_t *p, *end, *start;
    size_t op_off; /* offset of the opcode being run */
    uint8_t op;
    mq_pk_arena *arena;
    mq_pk_obj **stack;
    size_t sp, stack_cap;
    size_t marks[MQ_PK_MAX_MARKS];
    size_t nmarks;
    mq_pk_obj **memo;
    size_t memo_cap, memo_limit;
} pk_vm;

static mq_status vm_fail(pk_vm *vm, const char *fmt, ...) MQ_PRINTF(2, 3);
static mq_status vm_fail(pk_vm *vm, const char *fmt, ...) {
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return mq__fail(vm->ctx, MQ_ERR_FORMAT, "%s: pickle opcode 0x%02x at byte %zu: %s", vm->where,
                    vm->op, vm->op_off, what);
}

static mq_pk_obj *new_obj(pk_vm *vm, mq_pk_kind kind) {
    mq_pk_obj *o = (mq_pk_obj *)arena_alloc(vm->ctx, vm->arena, sizeof *o);
    if (o) {
        memset(o, 0, sizeof *o);
        o->kind = kind;
    }
    return o;
}

static mq_status oom(pk_vm *vm) {
    if (mq_ctx_status(vm->ctx) == MQ_ERR_NOMEM) return MQ_ERR_NOMEM;
    return vm_fail(vm, "%s", "the pickle needs more memory than its size justifies (object bomb?)");
}

static mq_status push(pk_vm *vm, mq_pk_obj *o) {
    if (!o) return oom(vm);
    if (vm->sp == vm->stack_cap) {
        if (vm->sp >= MQ_PK_MAX_STACK) return vm_fail(vm, "%s", "stack too deep");
        MQ_TRY(
            mq__grow(vm->ctx, (void **)&vm->stack, &vm->stack_cap, vm->sp + 1, sizeof *vm->stack));
    }
    vm->stack[vm->sp++] = o;
    return MQ_OK;
}

static mq_pk_obj *top_above_mark(pk_vm *vm) {
    size_t floor = vm->nmarks ? vm->marks[vm->nmarks - 1] : 0;
    return vm->sp > floor ? vm->stack[vm->sp - 1] : NULL;
}

static mq_status pop(pk_vm *vm, mq_pk_obj **o) {
    if (!top_above_mark(vm)) return vm_fail(vm, "%s", "stack underflow");
    *o = vm->stack[--vm->sp];
    return MQ_OK;
}

static mq_status need(pk_vm *vm, size_t n) {
    if ((size_t)(vm->end - vm->p) < n) return vm_fail(vm, "%s", "truncated argument");
    return MQ_OK;
}

/* Appends to a sequence, growing it inside the arena. */
static mq_status seq_add(pk_vm *vm, mq_pk_obj *s, mq_pk_obj *item) {
    if (s->u.seq.n == s->u.seq.cap) {
        size_t cap = s->u.seq.cap ? s->u.seq.cap * 2 : 4;
        mq_pk_obj **items = (mq_pk_obj **)arena_alloc(vm->ctx, vm->arena, cap * sizeof *items);
        if (!items) return oom(vm);
        if (s->u.seq.n) memcpy(items, s->u.seq.items, s->u.seq.n * sizeof *items);
        s->u.seq.items = items;
        s->u.seq.cap = cap;
    }
    s->u.seq.items[s->u.seq.n++] = item;
    return MQ_OK;
}

/* Pops everything above the last MARK into a new sequence of `kind`. */
static mq_status pop_mark(pk_vm *vm, mq_pk_kind kind, mq_pk_obj **out) {
    if (!vm->nmarks) return vm_fail(vm, "%s", "no MARK on the stack");
    size_t base = vm->marks[--vm->nmarks];
    mq_pk_obj *s = new_obj(vm, kind);
    if (!s) return oom(vm);
    size_t n = vm->sp - base;
    if (n) {
        s->u.seq.items = (mq_pk_obj **)arena_alloc(vm->ctx, vm->arena, n * sizeof *s->u.seq.items);
        if (!s->u.seq.items) return oom(vm);
        memcpy(s->u.seq.items, vm->stack + base, n * sizeof *s->u.seq.items);
    }
    s->u.seq.n = s->u.seq.cap = n;
    vm->sp = base;
    *out = s;
    return MQ_OK;
}

static mq_status op_global(pk_vm *vm) {
    char full[256];
    size_t k = 0;
    for (int part = 0; part < 2; part++) {
        const uint8_t *nl = memchr(vm->p, '\n', (size_t)(vm->end - vm->p));
        if (!nl) return vm_fail(vm, "%s", "GLOBAL name is not terminated");
        size_t n = (size_t)(nl - vm->p);
        if (k + n + 2 > sizeof full) return vm_fail(vm, "%s", "GLOBAL name too long");
        for (size_t i = 0; i < n; i++)
            full[k++] = (vm->p[i] >= 0x20 && vm->p[i] < 0x7F) ? (char)vm->p[i] : '?';
        if (part == 0) full[k++] = '.';
        vm->p = nl + 1;
    }
    full[k] = 0;
    mq_pk_obj *g = new_obj(vm, MQ_PK_GLOBAL);
    if (!g) return oom(vm);
    for (size_t i = 0; i < sizeof global_table / sizeof *global_table; i++) {
        if (!strcmp(global_table[i].name, full)) {
            g->u.global.id = global_table[i].id;
            g->u.global.name = global_table[i].name;
            return push(vm, g);
        }
    }
    const char *cls = NULL;
    if (!strncmp(full, "torch.cuda.", 11))
        cls = full + 11;
    else if (!strncmp(full, "torch.", 6))
        cls = full + 6;
    if (cls) {
        for (size_t i = 0; i < sizeof storage_table / sizeof *storage_table; i++) {
            if (!strcmp(storage_table[i].name, cls)) {
                g->u.global.id = MQ_G_STORAGE_CLASS;
                g->u.global.dtype = storage_table[i].dtype;
                g->u.global.name = storage_table[i].name;
                return push(vm, g);
            }
        }
        for (size_t i = 0; i < sizeof storage_unsupported / sizeof *storage_unsupported; i++)
            if (!strcmp(storage_unsupported[i], cls))
                return mq__fail(vm->ctx, MQ_ERR_UNSUPPORTED,
                                "%s: tensors of storage type '%s' are not supported", vm->where,
                                full);
    }
    if (!strncmp(full, "torch.", 6)) {
        for (size_t i = 0; i < sizeof dtype_table / sizeof *dtype_table; i++) {
            if (!strcmp(dtype_table[i].name, full + 6)) {
                g->u.global.id = MQ_G_DTYPE;
                g->u.global.dtype = dtype_table[i].dtype;
                g->u.global.name = dtype_table[i].name;
                return push(vm, g);
            }
        }
    }
    return vm_fail(vm,
                   "global '%s' is not allowed (only state-dict types are; nothing is "
                   "executed)",
                   full);
}

static bool is_int(const mq_pk_obj *o) {
    return o->kind == MQ_PK_INT || o->kind == MQ_PK_BOOL;
}

/* Reads an int tuple (a shape or strides). */
static mq_status int_tuple(pk_vm *vm, const mq_pk_obj *t, const char *what, int *n, int64_t *out) {
    if (t->kind != MQ_PK_TUPLE && t->kind != MQ_PK_LIST)
        return vm_fail(vm, "tensor %s is not a tuple", what);
    if (t->u.seq.n > MQ_MAX_DIMS)
        return mq__fail(vm->ctx, MQ_ERR_UNSUPPORTED, "%s: a tensor has %zu dimensions (at most %d)",
                        vm->where, t->u.seq.n, MQ_MAX_DIMS);
    for (size_t i = 0; i < t->u.seq.n; i++) {
        if (!is_int(t->u.seq.items[i]) || t->u.seq.items[i]->u.i < 0)
            return vm_fail(vm, "tensor %s holds a negative or non-integer entry", what);
        out[i] = t->u.seq.items[i]->u.i;
    }
    *n = (int)t->u.seq.n;
    return MQ_OK;
}

static mq_status rebuild_tensor(pk_vm *vm, mq_pk_global id, const mq_pk_obj *args,
                                mq_pk_obj **out) {
    size_t n = args->u.seq.n, min = id == MQ_G_REBUILD_TENSOR      ? 4
                                    : id == MQ_G_REBUILD_TENSOR_V3 ? 7
                                                                   : 6;
    if (n < min || n > min + 1 || (id == MQ_G_REBUILD_TENSOR && n != 4))
        return vm_fail(vm, "%s", "wrong number of arguments to a tensor rebuild function");
    mq_pk_obj *const *a = args->u.seq.items;
    if (a[0]->kind != MQ_PK_STORAGE) return vm_fail(vm, "%s", "tensor storage is not a storage");
    if (!is_int(a[1]) || a[1]->u.i < 0) return vm_fail(vm, "%s", "bad tensor storage offset");
    mq_pk_tensor *t = (mq_pk_tensor *)arena_alloc(vm->ctx, vm->arena, sizeof *t);
    if (!t) return oom(vm);
    memset(t, 0, sizeof *t);
    t->storage = a[0];
    t->offset = a[1]->u.i;
    int nd_stride = 0;
    MQ_TRY(int_tuple(vm, a[2], "shape", &t->ndim, t->shape));
    MQ_TRY(int_tuple(vm, a[3], "strides", &nd_stride, t->stride));
    if (nd_stride != t->ndim) return vm_fail(vm, "%s", "tensor shape and strides differ in length");
    t->dtype = a[0]->u.storage.dtype;
    if (id == MQ_G_REBUILD_TENSOR_V3) {
        if (a[6]->kind != MQ_PK_GLOBAL || a[6]->u.global.id != MQ_G_DTYPE)
            return vm_fail(vm, "%s", "tensor dtype is not a torch dtype");
        t->dtype = a[6]->u.global.dtype;
    } else if (a[0]->u.storage.dtype == MQ_DTYPE_INVALID) {
        return vm_fail(vm, "%s", "an untyped storage needs _rebuild_tensor_v3");
    }
    mq_pk_obj *o = new_obj(vm, MQ_PK_TENSOR);
    if (!o) return oom(vm);
    o->u.tensor = t;
    *out = o;
    return MQ_OK;
}

/* Interprets a call of an allowed global on an argument tuple. */
static mq_status call(pk_vm *vm, const mq_pk_obj *fn, const mq_pk_obj *args, int depth,
                      mq_pk_obj **out) {
    if (fn->kind != MQ_PK_GLOBAL)
        return vm_fail(vm, "%s", "REDUCE on something that is not a global");
    if (args->kind != MQ_PK_TUPLE) return vm_fail(vm, "%s", "REDUCE arguments are not a tuple");
    size_t n = args->u.seq.n;
    mq_pk_obj *const *a = args->u.seq.items;
    switch (fn->u.global.id) {
    case MQ_G_ORDERED_DICT:
        if (n != 0) return vm_fail(vm, "%s", "OrderedDict() with arguments");
        *out = new_obj(vm, MQ_PK_DICT);
        return *out ? MQ_OK : oom(vm);
    case MQ_G_REBUILD_TENSOR:
    case MQ_G_REBUILD_TENSOR_V2:
    case MQ_G_REBUILD_TENSOR_V3: return rebuild_tensor(vm, fn->u.global.id, args, out);
    case MQ_G_REBUILD_PARAMETER:
    case MQ_G_REBUILD_PARAMETER_STATE:
        if (n != (fn->u.global.id == MQ_G_REBUILD_PARAMETER ? 3u : 4u) ||
            a[0]->kind != MQ_PK_TENSOR)
            return vm_fail(vm, "%s", "bad arguments to _rebuild_parameter");
        *out = a[0];
        return MQ_OK;
    case MQ_G_REBUILD_FROM_TYPE_V2:
        if (n != 4 || a[1]->kind != MQ_PK_GLOBAL ||
            (a[1]->u.global.id != MQ_G_TENSOR && a[1]->u.global.id != MQ_G_PARAMETER) || depth > 0)
            return vm_fail(vm, "%s", "bad arguments to _rebuild_from_type_v2");
        MQ_TRY(call(vm, a[0], a[2], depth + 1, out));
        if ((*out)->kind != MQ_PK_TENSOR)
            return vm_fail(vm, "%s", "_rebuild_from_type_v2 of a non-tensor");
        return MQ_OK;
    case MQ_G_SIZE:
        if (n != 1 || (a[0]->kind != MQ_PK_TUPLE && a[0]->kind != MQ_PK_LIST))
            return vm_fail(vm, "%s", "bad arguments to torch.Size");
        *out = new_obj(vm, MQ_PK_TUPLE);
        if (!*out) return oom(vm);
        (*out)->u.seq = a[0]->u.seq;
        return MQ_OK;
    case MQ_G_DEVICE:
        if (n < 1 || n > 2 || a[0]->kind != MQ_PK_STR)
            return vm_fail(vm, "%s", "bad arguments to torch.device");
        *out = new_obj(vm, MQ_PK_OTHER);
        return *out ? MQ_OK : oom(vm);
    case MQ_G_UNSUPPORTED:
        return mq__fail(vm->ctx, MQ_ERR_UNSUPPORTED,
                        "%s: '%s' (a sparse, quantized, nested or meta tensor) is not supported",
                        vm->where, fn->u.global.name);
    default: return vm_fail(vm, "calling '%s' is not allowed", fn->u.global.name);
    }
}

static mq_status op_persid(pk_vm *vm) {
    mq_pk_obj *pid = NULL;
    MQ_TRY(pop(vm, &pid));
    if (pid->kind != MQ_PK_TUPLE || pid->u.seq.n != 5)
        return vm_fail(vm, "%s",
                       "persistent id is not a 5-tuple ('storage', class, key, location, numel)");
    mq_pk_obj *const *a = pid->u.seq.items;
    if (a[0]->kind != MQ_PK_STR || a[0]->u.str.len != 7 || memcmp(a[0]->u.str.s, "storage", 7))
        return vm_fail(vm, "%s", "persistent id is not a storage");
    if (a[1]->kind != MQ_PK_GLOBAL || a[1]->u.global.id != MQ_G_STORAGE_CLASS)
        return vm_fail(vm, "%s", "persistent id names no storage class");
    if (a[2]->kind != MQ_PK_STR || a[3]->kind != MQ_PK_STR || !is_int(a[4]) || a[4]->u.i < 0)
        return vm_fail(vm, "%s", "malformed storage persistent id");
    mq_pk_obj *s = new_obj(vm, MQ_PK_STORAGE);
    if (!s) return oom(vm);
    s->u.storage.key = a[2]->u.str.s;
    s->u.storage.key_len = a[2]->u.str.len;
    s->u.storage.dtype = a[1]->u.global.dtype;
    size_t es = a[1]->u.global.dtype == MQ_DTYPE_INVALID ? 1 : mq_dtype_size(a[1]->u.global.dtype);
    if (!mq__mul_u64((uint64_t)a[4]->u.i, es, &s->u.storage.nbytes))
        return vm_fail(vm, "%s", "storage size overflows");
    return push(vm, s);
}

static mq_status memo_put(pk_vm *vm, uint64_t idx) {
    mq_pk_obj *t = top_above_mark(vm);
    if (!t) return vm_fail(vm, "%s", "memo store from an empty stack");
    if (idx >= vm->memo_limit)
        return vm_fail(vm, "%s", "memo index larger than the pickle justifies");
    if (idx >= vm->memo_cap) {
        size_t old = vm->memo_cap;
        MQ_TRY(mq__grow(vm->ctx, (void **)&vm->memo, &vm->memo_cap, (size_t)idx + 1,
                        sizeof *vm->memo));
        memset(vm->memo + old, 0, (vm->memo_cap - old) * sizeof *vm->memo);
    }
    vm->memo[idx] = t;
    return MQ_OK;
}

static mq_status memo_get(pk_vm *vm, uint64_t idx) {
    if (idx >= vm->memo_cap || !vm->memo[idx]) return vm_fail(vm, "%s", "memo entry not set");
    return push(vm, vm->memo[idx]);
}

static mq_status step(pk_vm *vm, const mq_pk_obj **root, bool *done) {
    mq_pk_obj *a, *b, *o;
    const uint8_t *p;
    switch (vm->op) {
    case 0x80: /* PROTO */
        MQ_TRY(need(vm, 1));
        if (*vm->p++ > 5) return vm_fail(vm, "%s", "unknown protocol");
        return MQ_OK;
    case '.': /* STOP */
        MQ_TRY(pop(vm, &o));
        *root = o;
        *done = true;
        return MQ_OK;
    case 'c': return op_global(vm);
    case 'R': /* REDUCE */
        MQ_TRY(pop(vm, &a));
        MQ_TRY(pop(vm, &b));
        MQ_TRY(call(vm, b, a, 0, &o));
        return push(vm, o);
    case 0x81: /* NEWOBJ */
        MQ_TRY(pop(vm, &a));
        MQ_TRY(pop(vm, &b));
        if (b->kind != MQ_PK_GLOBAL || b->u.global.id != MQ_G_PARAMETER)
            return vm_fail(vm, "%s", "only torch.nn.Parameter may be instantiated");
        if (a->kind != MQ_PK_TUPLE || a->u.seq.n < 1 || a->u.seq.n > 2 ||
            a->u.seq.items[0]->kind != MQ_PK_TENSOR)
            return vm_fail(vm, "%s", "bad arguments to Parameter");
        return push(vm, a->u.seq.items[0]);
    case 'b': /* BUILD */
        MQ_TRY(pop(vm, &a));
        o = top_above_mark(vm);
        if (!o || (o->kind != MQ_PK_TENSOR && o->kind != MQ_PK_DICT))
            return vm_fail(vm, "%s",
                           "BUILD is allowed on tensors, parameters and OrderedDicts only");
        if (o->kind == MQ_PK_TENSOR && a->kind != MQ_PK_TUPLE && a->kind != MQ_PK_DICT &&
            a->kind != MQ_PK_NONE)
            return vm_fail(vm, "%s", "BUILD of a tensor with an unexpected state");
        return MQ_OK; /* state (attributes such as _metadata) is not needed */
    case '(':         /* MARK */
        if (vm->nmarks == MQ_PK_MAX_MARKS) return vm_fail(vm, "%s", "MARKs nested too deeply");
        vm->marks[vm->nmarks++] = vm->sp;
        return MQ_OK;
    case 't': MQ_TRY(pop_mark(vm, MQ_PK_TUPLE, &o)); return push(vm, o);
    case ')': return push(vm, new_obj(vm, MQ_PK_TUPLE));
    case 0x85:
    case 0x86:
    case 0x87: { /* TUPLE1..3 */
        size_t n = (size_t)(vm->op - 0x84);
        mq_pk_obj *items[3];
        for (size_t i = n; i-- > 0;) MQ_TRY(pop(vm, &items[i]));
        o = new_obj(vm, MQ_PK_TUPLE);
        if (!o) return oom(vm);
        for (size_t i = 0; i < n; i++) MQ_TRY(seq_add(vm, o, items[i]));
        return push(vm, o);
    }
    case ']': return push(vm, new_obj(vm, MQ_PK_LIST));
    case '}': return push(vm, new_obj(vm, MQ_PK_DICT));
    case 0x8f: return push(vm, new_obj(vm, MQ_PK_SET));
    case 'a': /* APPEND */
        MQ_TRY(pop(vm, &a));
        o = top_above_mark(vm);
        if (!o || o->kind != MQ_PK_LIST)
            return vm_fail(vm, "%s", "APPEND to something that is not a list");
        return seq_add(vm, o, a);
    case 'e':
    case 'u': { /* APPENDS, SETITEMS */
        MQ_TRY(pop_mark(vm, MQ_PK_TUPLE, &a));
        o = top_above_mark(vm);
        mq_pk_kind want = vm->op == 'e' ? MQ_PK_LIST : MQ_PK_DICT;
        if (!o || o->kind != want)
            return vm_fail(vm, "%s",
                           vm->op == 'e' ? "APPENDS to something that is not a list"
                                         : "SETITEMS on something that is not a dict");
        if (vm->op == 'u' && a->u.seq.n % 2) return vm_fail(vm, "%s", "SETITEMS with an odd count");
        for (size_t i = 0; i < a->u.seq.n; i++) MQ_TRY(seq_add(vm, o, a->u.seq.items[i]));
        return MQ_OK;
    }
    case 's': /* SETITEM */
        MQ_TRY(pop(vm, &a));
        MQ_TRY(pop(vm, &b));
        o = top_above_mark(vm);
        if (!o || o->kind != MQ_PK_DICT)
            return vm_fail(vm, "%s", "SETITEM on something that is not a dict");
        MQ_TRY(seq_add(vm, o, b));
        return seq_add(vm, o, a);
    case 'N': return push(vm, new_obj(vm, MQ_PK_NONE));
    case 0x88:
    case 0x89:
        o = new_obj(vm, MQ_PK_BOOL);
        if (o) o->u.i = vm->op == 0x88;
        return push(vm, o);
    case 'J':
    case 'K':
    case 'M': { /* BININT, BININT1, BININT2 */
        size_t n = vm->op == 'J' ? 4 : vm->op == 'K' ? 1 : 2;
        MQ_TRY(need(vm, n));
        o = new_obj(vm, MQ_PK_INT);
        if (o)
            o->u.i = n == 4   ? (int64_t)(int32_t)mq__load_le32(vm->p)
                     : n == 2 ? (int64_t)mq__load_le16(vm->p)
                              : (int64_t)vm->p[0];
        vm->p += n;
        return push(vm, o);
    }
    case 0x8a: { /* LONG1 */
        MQ_TRY(need(vm, 1));
        size_t n = *vm->p++;
        MQ_TRY(need(vm, n));
        if (n > 8) return vm_fail(vm, "%s", "integer wider than 64 bits");
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) v |= (uint64_t)vm->p[i] << (8 * i);
        if (n && n < 8 && (vm->p[n - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
        vm->p += n;
        o = new_obj(vm, MQ_PK_INT);
        if (o) memcpy(&o->u.i, &v, sizeof v);
        return push(vm, o);
    }
    case 'G': { /* BINFLOAT, big-endian */
        MQ_TRY(need(vm, 8));
        uint64_t v = 0;
        for (int i = 0; i < 8; i++) v = (v << 8) | vm->p[i];
        vm->p += 8;
        o = new_obj(vm, MQ_PK_FLOAT);
        if (o) memcpy(&o->u.f, &v, sizeof v);
        return push(vm, o);
    }
    case 'X':
    case 'U': { /* BINUNICODE, SHORT_BINSTRING */
        size_t hdr = vm->op == 'X' ? 4 : 1;
        MQ_TRY(need(vm, hdr));
        size_t n = vm->op == 'X' ? mq__load_le32(vm->p) : vm->p[0];
        vm->p += hdr;
        MQ_TRY(need(vm, n));
        p = vm->p;
        vm->p += n;
        o = new_obj(vm, MQ_PK_STR);
        if (o) {
            o->u.str.s = (const char *)p;
            o->u.str.len = n;
        }
        return push(vm, o);
    }
    case 'Q': return op_persid(vm);
    case 'h':
        MQ_TRY(need(vm, 1));
        vm->p += 1;
        return memo_get(vm, vm->p[-1]);
    case 'j':
        MQ_TRY(need(vm, 4));
        vm->p += 4;
        return memo_get(vm, mq__load_le32(vm->p - 4));
    case 'q':
        MQ_TRY(need(vm, 1));
        vm->p += 1;
        return memo_put(vm, vm->p[-1]);
    case 'r':
        MQ_TRY(need(vm, 4));
        vm->p += 4;
        return memo_put(vm, mq__load_le32(vm->p - 4));
    default: {
        char name[8];
        snprintf(name, sizeof name, "'%c'", vm->op >= 0x20 && vm->op < 0x7F ? vm->op : '?');
        return vm_fail(vm, "opcode %s is not allowed in a weights-only pickle", name);
    }
    }
}

mq_status mq__pk_load(mq_ctx *ctx, const char *where, const uint8_t *data, size_t len,
                      mq_pk_arena **arena_out, const mq_pk_obj **root) {
    *arena_out = NULL;
    *root = NULL;
    if (len > MQ_PK_MAX_BYTES)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: pickle of %zu bytes is too large", where, len);
    pk_vm vm;
    memset(&vm, 0, sizeof vm);
    vm.ctx = ctx;
    vm.where = where;
    vm.p = vm.start = data;
    vm.end = data + len;
    vm.memo_limit = len / 2 + 1;
    vm.arena = (mq_pk_arena *)mq__calloc(ctx, 1, sizeof *vm.arena);
    if (!vm.arena) return MQ_ERR_NOMEM;
    vm.arena->limit = (uint64_t)len * 64 + (64u << 20);
    mq_status st = MQ_OK;
    bool done = false;
    while (st == MQ_OK && !done) {
        if (vm.p == vm.end) {
            st = mq__fail(ctx, MQ_ERR_FORMAT, "%s: pickle ends without STOP", where);
            break;
        }
        vm.op_off = (size_t)(vm.p - vm.start);
        vm.op = *vm.p++;
        st = step(&vm, root, &done);
    }
    mq__free(ctx, vm.stack);
    mq__free(ctx, vm.memo);
    if (st != MQ_OK) {
        mq__pk_free(ctx, vm.arena);
        *root = NULL;
        return st;
    }
    *arena_out = vm.arena;
    return MQ_OK;
}
