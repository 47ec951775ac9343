/* The table-driven option parser shared by every subcommand (cli/opts.h). */
#include "opts.h"

#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const cli_option global_opts[] = {
    OPT_FLAG("quiet|q", cli_opts, quiet, "errors only"),
    OPT_COUNT("verbose|v", cli_opts, verbose, "more detail (repeatable)"),
    OPT_FLAG("json", cli_opts, json, "machine-readable output on stdout"),
    OPT_INT("threads", cli_opts, threads, "N", 0, 1024, "worker threads (0, the default: all CPUs)"),
    OPT_FLAG("progress", cli_opts, progress_on, "progress bar on stderr (default on a terminal)"),
    OPT_FLAG("no-progress", cli_opts, progress_off, "no progress bar"),
    OPT_FLAG("force|f", cli_opts, force, "replace an existing output file (regular files only)"),
    OPT_FLAG("help|h", cli_opts, help, "this help"),
    OPT_END,
};

/* Does `names` ("output|o") hold `name` (of length n)? Long names have 2+ characters. */
static bool has_name(const char *names, const char *name, size_t n, bool is_short) {
    for (const char *p = names; *p;) {
        const char *bar = strchr(p, '|');
        size_t k = bar ? (size_t)(bar - p) : strlen(p);
        if (k == n && (k == 1) == is_short && !strncmp(p, name, n)) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

/* The canonical name into buf: "--output" or "-o". */
static const char *shown(const cli_option *o, char *buf, size_t cap) {
    size_t k = strcspn(o->names, "|");
    snprintf(buf, cap, "%s%.*s", k == 1 ? "-" : "--", (int)k, o->names);
    return buf;
}

static int count_opts(const cli_option *t) {
    int n = 0;
    while (t && t[n].names) n++;
    return n;
}

/* Finds an option in the command's table (*global false) or the global one. */
static const cli_option *lookup(const cli_command *cmd, const char *name, size_t n, bool is_short,
                                bool *global, int *index) {
    const cli_option *t = cmd ? cmd->opts : NULL;
    for (int i = 0; t && t[i].names; i++)
        if (has_name(t[i].names, name, n, is_short)) {
            *global = false;
            *index = i;
            return &t[i];
        }
    for (int i = 0; global_opts[i].names; i++)
        if (has_name(global_opts[i].names, name, n, is_short)) {
            *global = true;
            *index = i;
            return &global_opts[i];
        }
    return NULL;
}

static bool takes_value(const cli_option *o) {
    return o->type != CLI_FLAG && o->type != CLI_COUNT;
}

static void list_choices(const cli_choice *c, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; c[i].names && len < cap; i++) {
        size_t k = strcspn(c[i].names, "|");
        len += (size_t)snprintf(buf + len, cap - len, "%s%.*s", i ? ", " : "", (int)k, c[i].names);
    }
}

static bool choice_match(const char *names, const char *v) {
    size_t n = strlen(v);
    for (const char *p = names; *p;) {
        size_t k = strcspn(p, "|");
        if (k == n && !strncasecmp(p, v, n)) return true;
        if (!p[k]) break;
        p += k + 1;
    }
    return false;
}

int cli_choice_find(const cli_choice *c, const char *v) {
    for (int i = 0; c[i].names; i++)
        if (choice_match(c[i].names, v)) return i;
    return -1;
}

bool cli_list_push(cli_list *l, const char *s, bool from_config) {
    if (!from_config && l->from_config) l->n = 0; /* the command line replaces */
    l->from_config = from_config;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        const char **v = (const char **)realloc(l->v, cap * sizeof *v);
        if (!v) return false;
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = s;
    return true;
}

void cli_list_free(cli_list *l) {
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Stores `v` (NULL for flags) into the option's field. Returns 0 or an exit code. */
static int store(const char *cmd, const cli_option *o, void *state, const char *v, bool from_config) {
    char name[64], err[256];
    char *field = (char *)state + o->offset;
    shown(o, name, sizeof name);
    switch (o->type) {
    case CLI_FLAG: *(bool *)field = !(o->flags & CLI_NEGATE); return 0;
    case CLI_COUNT: (*(int *)field)++; return 0;
    case CLI_STR: *(const char **)field = v; return 0;
    case CLI_INT: {
        long long n;
        if (!cli_parse_int(v, o->lo, o->hi, &n))
            return cli_usage_error(cmd, "%s: expected an integer from %lld to %lld, got '%s'",
                                   name, o->lo, o->hi, v);
        *(long long *)field = n;
        return 0;
    }
    case CLI_DOUBLE: {
        double d;
        if (!cli_parse_double(v, &d) || !isfinite(d))
            return cli_usage_error(cmd, "%s: expected a number, got '%s'", name, v);
        *(double *)field = d;
        return 0;
    }
    case CLI_CHOICE:
        for (int i = 0; o->choices[i].names; i++)
            if (choice_match(o->choices[i].names, v)) {
                *(int *)field = o->choices[i].value;
                return 0;
            }
        list_choices(o->choices, err, sizeof err);
        return cli_usage_error(cmd, "%s: invalid value '%s' (valid: %s)", name, v, err);
    case CLI_LIST:
        if (!cli_list_push((cli_list *)field, v, from_config)) {
            fprintf(stderr, "monoquant: error: out of memory\n");
            return EXIT_GENERAL;
        }
        return 0;
    case CLI_FN: {
        const char *why = o->fn(state, v, err, sizeof err);
        return why ? cli_usage_error(cmd, "%s: %s", name, why) : 0;
    }
    }
    return 0;
}

/* Is argv word `a` an option of this command (or a global one)? */
static bool is_option_word(const cli_command *cmd, const char *a) {
    bool g;
    int idx;
    if (a[0] != '-' || !a[1]) return false;
    if (a[1] == '-') {
        size_t n = strcspn(a + 2, "=");
        return n && lookup(cmd, a + 2, n, false, &g, &idx);
    }
    return lookup(cmd, a + 1, 1, true, &g, &idx) != NULL;
}

static void mark(cli_args *out, bool global, int idx) {
    if (out && !global && idx < CLI_MAX_OPTS) out->seen[idx] = true;
}

/* Parses argv[i...]; stops at the first non-option word when `stop_at_word`. Returns the
 * index reached, or -(exit code) - 1. */
static int parse_words(const cli_command *cmd, void *state, int argc, char **argv, int i,
                       cli_args *out, bool stop_at_word) {
    const char *cname = cmd ? cmd->name : NULL;
#define FAIL(...) return -cli_usage_error(cname, __VA_ARGS__) - 1
    bool options_done = false;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || !a[1]) {
            if (stop_at_word) return i;
            if (out->npos >= CLI_MAX_POS) FAIL("too many arguments");
            out->pos[out->npos++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            options_done = true;
            continue;
        }
        bool global;
        int idx;
        const cli_option *o;
        const char *v = NULL;
        char name[64];
        if (a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            o = lookup(cmd, a + 2, n, false, &global, &idx);
            if (!o) FAIL("unknown option '%.*s'", (int)(n + 2), a);
            if (eq && !takes_value(o)) FAIL("%s takes no value", shown(o, name, sizeof name));
            if (eq) v = eq + 1;
        } else {
            /* short options; flags may cluster (-qf); a valued one ends the cluster */
            for (const char *c = a + 1; *c; c++) {
                o = lookup(cmd, c, 1, true, &global, &idx);
                if (!o) FAIL("unknown option '-%c'", *c);
                if (!takes_value(o)) {
                    mark(out, global, idx);
                    int rc = store(cname, o, global ? (void *)&g_cli : state, NULL, false);
                    if (rc) return -rc - 1;
                    continue;
                }
                if (c[1]) v = c + 1; /* -ofile */
                break;
            }
            if (!takes_value(o)) continue;
        }
        if (takes_value(o) && !v) {
            if (i + 1 >= argc || is_option_word(cmd, argv[i + 1]))
                FAIL("%s needs a value", shown(o, name, sizeof name));
            v = argv[++i];
        }
        mark(out, global, idx);
        int rc = store(cname, o, global ? (void *)&g_cli : state, v, false);
        if (rc) return -rc - 1;
        /* a greedy list takes the words that follow */
        if (o->type == CLI_LIST && (o->flags & CLI_GREEDY))
            while (i + 1 < argc && argv[i + 1][0] != '-') {
                rc = store(cname, o, state, argv[++i], false);
                if (rc) return -rc - 1;
            }
    }
    return i;
#undef FAIL
}

static void finish_globals(void) {
    if (g_cli.progress_on) g_cli.progress = true;
    if (g_cli.progress_off || g_cli.quiet) g_cli.progress = false;
}

int cli_parse_globals(int argc, char **argv) {
    int i = parse_words(NULL, NULL, argc, argv, 1, NULL, true);
    finish_globals();
    return i;
}

int cli_parse(const cli_command *cmd, void *state, int argc, char **argv, cli_args *out) {
    memset(out, 0, sizeof *out);
    if (count_opts(cmd->opts) > CLI_MAX_OPTS) return EXIT_GENERAL;
    int r = parse_words(cmd, state, argc, argv, 1, out, false);
    finish_globals();
    if (r < 0) return -r - 1;
    if (g_cli.help) {
        cli_help(cmd, stdout);
        return -1;
    }
    return 0;
}

int cli_apply_named(const cli_command *cmd, void *state, const char *name, const char *value,
                    bool from_config, cli_args *args) {
    bool global;
    int idx;
    const cli_option *o = lookup(cmd, name, strlen(name), strlen(name) == 1, &global, &idx);
    if (!o) return -1;
    if (!takes_value(o)) {
        if (value && strcmp(value, "true")) {
            if (!strcmp(value, "false")) return 0;
            return cli_usage_error(cmd->name, "%s is a flag: true or false, got '%s'", name, value);
        }
    } else if (!value) {
        return cli_usage_error(cmd->name, "%s needs a value", name);
    }
    mark(args, global, idx);
    int rc = store(cmd->name, o, global ? (void *)&g_cli : state, value, from_config);
    finish_globals();
    return rc;
}

bool cli_given(const cli_command *cmd, const cli_args *args, const char *name) {
    for (int i = 0; cmd->opts[i].names && i < CLI_MAX_OPTS; i++)
        if (has_name(cmd->opts[i].names, name, strlen(name), strlen(name) == 1))
            return args->seen[i];
    return false;
}

static void help_lines(FILE *f, const cli_option *t) {
    for (int i = 0; t[i].names; i++) {
        const cli_option *o = &t[i];
        char left[300], shorts[8] = "", longs[64] = "";
        /* "-o, --output FILE" */
        for (const char *p = o->names; *p;) {
            size_t k = strcspn(p, "|");
            if (k == 1 && !shorts[0]) snprintf(shorts, sizeof shorts, "-%c, ", *p);
            else if (k > 1 && !longs[0]) snprintf(longs, sizeof longs, "--%.*s", (int)k, p);
            if (!p[k]) break;
            p += k + 1;
        }
        char meta[208] = "";
        if (o->type == CLI_CHOICE && !o->metavar) {
            char c[200];
            list_choices(o->choices, c, sizeof c);
            for (char *s = c; *s; s++)
                if (*s == ',' && s[1] == ' ') memmove(s, s + 1, strlen(s)), *s = '|';
            snprintf(meta, sizeof meta, " %s", c);
        } else if (o->metavar) {
            snprintf(meta, sizeof meta, " %s", o->metavar);
        }
        snprintf(left, sizeof left, "%s%s%s", shorts, longs, meta);
        const char *h = o->help ? o->help : "";
        int width = 26;
        if ((int)strlen(left) + 2 > width) fprintf(f, "  %s\n%*s", left, width, "");
        else fprintf(f, "  %-*s", width - 2, left);
        for (const char *p = h; *p;) {
            size_t k = strcspn(p, "\n");
            fprintf(f, "%.*s\n", (int)k, p);
            p += k;
            if (*p == '\n') {
                p++;
                fprintf(f, "%*s", width, "");
            }
        }
        if (!*h) fputc('\n', f);
        if (o->type == CLI_CHOICE && o->metavar) {
            char c[200];
            list_choices(o->choices, c, sizeof c);
            fprintf(f, "%*s(%s)\n", width, "", c);
        }
    }
}

void cli_help_globals(FILE *f) {
    fprintf(f, "global options (before or after the command):\n");
    help_lines(f, global_opts);
}

void cli_help(const cli_command *cmd, FILE *f) {
    fprintf(f, "usage: monoquant %s %s\n\n%s\n", cmd->name, cmd->usage, cmd->about);
    if (cmd->opts[0].names) {
        fprintf(f, "\noptions:\n");
        help_lines(f, cmd->opts);
    }
    fputc('\n', f);
    cli_help_globals(f);
    if (cmd->footer) fprintf(f, "\n%s", cmd->footer);
}
