/* daemon/master/metrics_format.c and metrics_request.c, and the plugin metric slots of
 * daemon/core/stats.c: the text /metrics answers, the request it answers, the table limit. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "berth/handler.h"
#include "core/stats.h"
#include "master/metrics.h"

static int setup(void **state)
{
    stats_t *s = stats_map();
    assert_non_null(s);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    stats_unmap(*state);
    return 0;
}

static char *render(const stats_t *s, metrics_buf_t *b)
{
    *b = (metrics_buf_t){.cap = METRICS_BODY_MAX};
    assert_int_equal(metrics_render(s, b), 0);
    metrics_buf_printf(b, "%s", ""); /* NUL-terminated even when empty */
    return b->data;
}

static void counters_histogram_and_escapes(void **state)
{
    stats_t *s = *state;
    int slot = stats_listener_claim(s, BERTH_PROTO_TCP, "we\"ird\\name", "127.0.0.1:7");
    assert_int_equal(slot, 0);
    stats_listener_t *l = &s->listeners[slot];
    atomic_store(&l->accepted, 3);
    atomic_store(&l->refused_acl, 2);
    stats_conn_closed(l, STATS_CLOSED_EOF, 3);         /* <= 5 ms */
    stats_conn_closed(l, STATS_CLOSED_IDLE, 7000);     /* <= 10 s */
    stats_conn_closed(l, STATS_CLOSED_DRAIN, 7200000); /* over an hour: +Inf only */
    metrics_buf_t b;
    const char *t = render(s, &b);
    const char *ln = "listener=\"we\\\"ird\\\\name\"";
    char want[256];
    snprintf(want, sizeof want, "berth_connections_accepted_total{%s} 3\n", ln);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "berth_connections_refused_total{%s,reason=\"deny\"} 2\n", ln);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "berth_connections_closed_total{%s,reason=\"idle\"} 1\n", ln);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "berth_connection_duration_seconds_bucket{%s,le=\"0.005\"} 1\n",
             ln);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "berth_connection_duration_seconds_bucket{%s,le=\"5\"} 1\n", ln);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "berth_connection_duration_seconds_bucket{%s,le=\"10\"} 2\n", ln);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "berth_connection_duration_seconds_bucket{%s,le=\"3600\"} 2\n", ln);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "berth_connection_duration_seconds_bucket{%s,le=\"+Inf\"} 3\n", ln);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "berth_connection_duration_seconds_sum{%s} 7207.003\n", ln);
    assert_non_null(strstr(t, want));
    assert_non_null(strstr(t, "# TYPE berth_connection_duration_seconds histogram\n"));
    assert_non_null(strstr(t, "berth_build_info{version=\"" BERTH_VERSION "\",abi=\"1\"} 1\n"));
    /* Every line is a comment or a sample ending in a newline. */
    assert_int_equal(t[strlen(t) - 1], '\n');
    metrics_buf_free(&b);
}

static void plugin_metrics_grouped_by_family(void **state)
{
    stats_t *s = *state;
    int a = stats_listener_claim(s, BERTH_PROTO_TCP, "a", "127.0.0.1:1");
    int b = stats_listener_claim(s, BERTH_PROTO_TCP, "b", "127.0.0.1:2");
    int m1 = stats_metric_claim(s, a, "p_x_total{code=\"1\"}", "X.\nline", BERTH_METRIC_COUNTER);
    int g = stats_metric_claim(s, a, "p_level", "Level \\", BERTH_METRIC_GAUGE);
    int m2 = stats_metric_claim(s, b, "p_x_total{code=\"1\"}", "X.", BERTH_METRIC_COUNTER);
    assert_true(m1 >= 0 && g >= 0 && m2 >= 0 && m1 != m2);
    /* The same listener and name: the same slot, whoever asks (every worker does). */
    assert_int_equal(stats_metric_claim(s, a, "p_x_total{code=\"1\"}", "X.", BERTH_METRIC_COUNTER),
                     m1);
    assert_int_equal(stats_metric_claim(s, a, "p_level", "", BERTH_METRIC_COUNTER), -EINVAL);
    atomic_store(&s->metrics[m1].value, 5);
    atomic_store(&s->metrics[m2].value, 6);
    atomic_store(&s->metrics[g].value, -2);
    metrics_buf_t buf;
    const char *t = render(s, &buf);
    const char *fam = strstr(t, "# HELP berth_p_x_total X.\\nline\n# TYPE berth_p_x_total counter\n"
                                "berth_p_x_total{listener=\"a\",code=\"1\"} 5\n"
                                "berth_p_x_total{listener=\"b\",code=\"1\"} 6\n");
    assert_non_null(fam);
    assert_null(strstr(strstr(fam, " counter\n"), "# TYPE berth_p_x_total")); /* once */
    assert_non_null(strstr(t, "# HELP berth_p_level Level \\\\\n# TYPE berth_p_level gauge\n"
                              "berth_p_level{listener=\"a\"} -2\n"));
    metrics_buf_free(&buf);
    /* A listener's socket released: its metrics go with it. */
    stats_listener_release(s, b);
    t = render(s, &buf);
    assert_null(strstr(t, "listener=\"b\""));
    metrics_buf_free(&buf);
}

static void a_full_table_refuses_new_metrics(void **state)
{
    stats_t *s = *state;
    int l = stats_listener_claim(s, BERTH_PROTO_TCP, "l", "127.0.0.1:1");
    char name[64];
    for (int i = 0; i < STATS_METRICS; i++) {
        snprintf(name, sizeof name, "p_m%d_total", i);
        assert_int_equal(stats_metric_claim(s, l, name, "", BERTH_METRIC_COUNTER), i);
    }
    assert_int_equal(stats_metric_claim(s, l, "p_more_total", "", BERTH_METRIC_COUNTER), -ENOSPC);
    assert_int_equal(atomic_load(&s->metrics_full), 1);
    /* Those in the table are still found. */
    assert_int_equal(stats_metric_claim(s, l, "p_m7_total", "", BERTH_METRIC_COUNTER), 7);
    metrics_buf_t buf;
    const char *t = render(s, &buf);
    assert_non_null(strstr(t, "berth_plugin_metrics_full_total 1\n"));
    metrics_buf_free(&buf);
    /* A released listener frees its slots for the next. */
    stats_listener_release(s, l);
    l = stats_listener_claim(s, BERTH_PROTO_TCP, "l2", "127.0.0.1:2");
    assert_true(stats_metric_claim(s, l, "p_more_total", "", BERTH_METRIC_COUNTER) >= 0);
}

static void metric_names(void **state)
{
    (void)state;
    assert_true(stats_metric_name_ok("a"));
    assert_true(stats_metric_name_ok("socks5_replies_total{code=\"0\"}"));
    assert_true(stats_metric_name_ok("x{a=\"\",b=\"1.2:3/4+5-6\"}"));
    assert_false(stats_metric_name_ok(""));
    assert_false(stats_metric_name_ok("1a"));
    assert_false(stats_metric_name_ok("a-b"));
    assert_false(stats_metric_name_ok("a{"));
    assert_false(stats_metric_name_ok("a{}"));
    assert_false(stats_metric_name_ok("a{b=\"c\"} "));
    assert_false(stats_metric_name_ok("a{b=\"c\",}"));
    assert_false(stats_metric_name_ok("a{b=\"c\\\"\"}"));
    assert_false(stats_metric_name_ok("a{listener=\"x\"}"));
    assert_false(stats_metric_name_ok("a{__name__=\"x\"}"));
    char longname[STATS_METRIC_NAME + 1];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_false(stats_metric_name_ok(longname));
}

static void a_capped_buffer_says_so(void **state)
{
    stats_t *s = *state;
    metrics_buf_t b = {.cap = 64};
    assert_int_equal(metrics_render(s, &b), -ENOMEM);
    assert_true(b.over);
    assert_true(b.len < 64);
    metrics_buf_free(&b);
}

static void requests(void **state)
{
    (void)state;
    int head;
#define REQ(text) metrics_request_parse(text, sizeof(text) - 1, &head)
    assert_int_equal(REQ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), METRICS_REQ_OK);
    assert_int_equal(head, 0);
    assert_int_equal(REQ("HEAD /metrics?a=b HTTP/1.0\n\n"), METRICS_REQ_OK);
    assert_int_equal(head, 1);
    assert_int_equal(REQ("GET /metrics HTTP/1.1\r\nHost: x\r\n"), METRICS_REQ_MORE);
    assert_int_equal(REQ("GET /metricsx HTTP/1.1\r\n\r\n"), METRICS_REQ_NOT_FOUND);
    assert_int_equal(REQ("GET / HTTP/1.1\r\n\r\n"), METRICS_REQ_NOT_FOUND);
    assert_int_equal(REQ("POST /metrics HTTP/1.1\r\n\r\n"), METRICS_REQ_METHOD);
    assert_int_equal(REQ("GET /metrics HTTP/2.0\r\n\r\n"), METRICS_REQ_VERSION);
    assert_int_equal(REQ("GET /metrics\r\n\r\n"), METRICS_REQ_BAD);
    assert_int_equal(REQ("GET  /metrics HTTP/1.1\r\n\r\n"), METRICS_REQ_BAD);
    assert_int_equal(REQ("\r\n\r\n"), METRICS_REQ_BAD);
    assert_int_equal(REQ("G\x01T /metrics HTTP/1.1\r\n\r\n"), METRICS_REQ_BAD);
#undef REQ
    static char big[METRICS_REQUEST_MAX];
    memset(big, 'a', sizeof big);
    assert_int_equal(metrics_request_parse(big, sizeof big, &head), METRICS_REQ_TOO_BIG);
    assert_int_equal(metrics_request_parse(big, sizeof big - 1, &head), METRICS_REQ_MORE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(counters_histogram_and_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(plugin_metrics_grouped_by_family, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_table_refuses_new_metrics, setup, teardown),
        cmocka_unit_test(metric_names),
        cmocka_unit_test_setup_teardown(a_capped_buffer_says_so, setup, teardown),
        cmocka_unit_test(requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
