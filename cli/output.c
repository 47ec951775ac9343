/* Output policy on the command line (-f/--force, the y/N question, stale temporary files) and
 * the signal handlers that remove temporary files. */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool cli_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* y/N on the terminal; false unless the answer starts with y. */
static bool ask_replace(const char *path) {
    cli_progress_done();
    fprintf(stderr, "monoquant: %s already exists; replace it? [y/N] ", path);
    fflush(stderr);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return false;
    return line[0] == 'y' || line[0] == 'Y';
}

/* Temporary files ".monoquant-<pid>-<n>.tmp" of processes that no longer run. */
static void note_stale_temps(const char *path) {
    if (g_cli.quiet) return;
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    DIR *d = opendir(dir);
    if (!d) return;
    int n = 0;
    char first[300] = "";
    for (struct dirent *e; (e = readdir(d));) {
        long pid;
        unsigned seq;
        char tail[8];
        if (sscanf(e->d_name, ".monoquant-%ld-%u%7s", &pid, &seq, tail) != 3 ||
            strcmp(tail, ".tmp") || pid <= 0)
            continue;
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        if (!n++) snprintf(first, sizeof first, "%s", e->d_name);
    }
    closedir(d);
    if (n)
        cli_warn("%s holds %d temporary file%s of interrupted monoquant runs (%s%s); remove "
                 "them with: rm %s/.monoquant-*.tmp (when no monoquant runs there)", dir, n,
                 n == 1 ? "" : "s", first, n > 1 ? ", ..." : "", dir);
}

int cli_prepare_output(mq_ctx *ctx, const char *path, const mq_model *input) {
    /* kinds and input identity first: they hold whatever the answer to the question */
    if (!strcmp(path, "-") && isatty(1)) {
        fprintf(stderr, "monoquant: error: -o -: standard output is a terminal; redirect it to a "
                "file or a pipe\n");
        return EXIT_CONFIG;
    }
    mq_ctx_set_overwrite(ctx, 1);
    mq_status st = mq_output_check(ctx, path, input);
    if (st != MQ_OK) return cli_fail(ctx, st);
    bool allow = g_cli.force;
    struct stat sb;
    if (!allow && strcmp(path, "-") && lstat(path, &sb) == 0) {
        bool asked = isatty(0) && isatty(2);
        if (asked) allow = ask_replace(path);
        if (!allow) {
            fprintf(stderr, "monoquant: error: %s already exists; %s\n", path,
                    asked ? "not replaced" : "-f/--force replaces it");
            return EXIT_CONFIG;
        }
    }
    mq_ctx_set_overwrite(ctx, allow);
    if (strcmp(path, "-")) note_stale_temps(path);
    return 0;
}

/* ---- signals --------------------------------------------------------------------------- */

static mq_ctx *volatile sig_ctx;

static void say(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void on_signal(int sig) {
    /* one report: a fault can hit several worker threads at once; the others wait for the
     * first to exit */
    static int entered;
    if (__atomic_exchange_n(&entered, 1, __ATOMIC_SEQ_CST))
        for (;;) pause();
    int removed = mq_ctx_remove_temporaries(sig_ctx);
    const char *name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM"
                     : sig == SIGHUP ? "SIGHUP" : "SIGBUS";
    if (cli_bar_shown) say("\n");
    if (sig == SIGBUS) {
        say("monoquant: error: input changed while reading (a file shrank under its mapping, "
            "SIGBUS); nothing written\n");
        _exit(EXIT_IO);
    }
    say("monoquant: interrupted by ");
    say(name);
    say(removed ? "; temporary file removed, nothing written\n" : "\n");
    _exit(128 + sig);
}

void cli_signals_install(mq_ctx *ctx) {
    sig_ctx = ctx;
    static bool installed;
    if (installed) return;
    installed = true;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigfillset(&sa.sa_mask); /* one handler at a time */
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGBUS};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
}
