/* compressed-tensors target matching: Python re.match semantics on POSIX regex, and the
 * precedence of exact names, patterns and class names. */
#include "harness.h"
#include "pipeline/hf_config.h"

TEST(pattern_anchored_at_start_like_re_match) {
    CHECK(mq__pattern_match(".*lm_head", "lm_head") == 1);
    CHECK(mq__pattern_match("lm_head", "model.lm_head") == 0);     /* re.match: not a search */
    CHECK(mq__pattern_match("model", "model.layers.0.mlp") == 1);  /* nor a full match */
}

TEST(pattern_python_escapes_and_groups) {
    CHECK(mq__pattern_match(".*layers\\.\\d+\\.mlp\\.down_proj$", "model.layers.12.mlp.down_proj") == 1);
    CHECK(mq__pattern_match(".*layers\\.\\d+\\.mlp\\.down_proj$", "model.layers.x.mlp.down_proj") == 0);
    CHECK(mq__pattern_match(".*self_attn\\.(?:q|k)_proj$", "a.self_attn.k_proj") == 1);
    CHECK(mq__pattern_match(".*self_attn\\.(?:q|k)_proj$", "a.self_attn.v_proj") == 0);
    CHECK(mq__pattern_match(".*?\\.mlp\\.\\w+", "x.mlp.up_proj") == 1);
    CHECK(mq__pattern_match("[\\d]+\\.x", "42.x") == 1);
    CHECK(mq__pattern_match("a$", "a") == 1);
    CHECK(mq__pattern_match("a$", "ab") == 0);
}

TEST(pattern_unsupported_is_reported) {
    CHECK(mq__pattern_match("(?!mlp).*", "x") == -1);   /* lookahead */
    CHECK(mq__pattern_match("(a)\\1", "aa") == -1);      /* backreference */
    CHECK(mq__pattern_match("(", "x") == -1);            /* invalid */
}

TEST(match_precedence_and_ignore) {
    char *t0[] = {"Linear"}, *t1[] = {"re:.*mlp.*"}, *t2[] = {"model.layers.0.mlp.up_proj"};
    char *ign[] = {"lm_head", "re:.*down_proj$"};
    mq__qgroup g[3];
    memset(g, 0, sizeof g);
    g[0].targets = t0, g[0].ntargets = 1;
    g[1].targets = t1, g[1].ntargets = 1;
    g[2].targets = t2, g[2].ntargets = 1;
    mq__hfconfig c;
    memset(&c, 0, sizeof c);
    c.groups = g, c.ngroups = 3;
    c.ignore = ign, c.nignore = 2;
    int ignored;
    CHECK(mq__hfconfig_match(&c, "model.layers.0.mlp.up_proj", &ignored) == &g[2]);
    CHECK(!ignored);
    CHECK(mq__hfconfig_match(&c, "model.layers.0.mlp.gate_proj", &ignored) == &g[1]);
    CHECK(mq__hfconfig_match(&c, "model.layers.0.self_attn.q_proj", &ignored) == &g[0]);
    mq__hfconfig_match(&c, "lm_head", &ignored);
    CHECK(ignored);
    mq__hfconfig_match(&c, "model.layers.3.mlp.down_proj", &ignored);
    CHECK(ignored);
}

int main(void) {
    RUN(pattern_anchored_at_start_like_re_match);
    RUN(pattern_python_escapes_and_groups);
    RUN(pattern_unsupported_is_reported);
    RUN(match_precedence_and_ignore);
    return test_summary();
}
