/* tests/integration/test_wechatpay_api.c: the WeChat Pay channel's query and refund clients
 * against tests/fakes/wechatpay_sim.py, a real HTTP server on a free port that checks our
 * request signatures with the merchant public key (Python's cryptography, not our code) and
 * signs its answers with the platform private key. Also feeds notifications built by the
 * simulator through verify + parse. Needs no RabbitMQ/Redis/MariaDB. */
#include <curl/curl.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "channel/wechatpay.h"
#include "common/jsonx.h"
#include "../unit/check.h"

#define PYTHON "/usr/bin/python3"

static char src[2048], keydir[2100], sim_script[2100], statedir[256];
static pid_t sim_pid;
static int sim_port;

/* ---------------------------------------------------------------- simulator */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* A failed CHECK exits: the simulator must not outlive the test. */
static void sim_kill(void)
{
    if (sim_pid > 0) {
        kill(sim_pid, SIGTERM);
        waitpid(sim_pid, NULL, 0);
        sim_pid = 0;
    }
}

static void sim_start(void)
{
    int fds[2];
    char line[128] = "", port[8] = "0";
    struct pollfd pfd;
    ssize_t n, got = 0;

    CHECK(pipe(fds) == 0);
    sim_pid = fork();
    CHECK(sim_pid >= 0);
    if (sim_pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(PYTHON, PYTHON, sim_script, port, statedir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    atexit(sim_kill);
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (strchr(line, '\n') == NULL && got < (ssize_t)sizeof(line) - 1) {
        CHECK(poll(&pfd, 1, 20000) == 1);
        n = read(fds[0], line + got, sizeof(line) - 1 - (size_t)got);
        CHECK(n > 0);
        got += n;
        line[got] = '\0';
    }
    close(fds[0]);
    CHECK(sscanf(line, "ready %d", &sim_port) == 1);
    CHECK(sim_port > 0);
}

/* The state the simulator leaves, removed after a passing run (kept when a check fails). */
static void sim_cleanup(void)
{
    static const char *const files[] = {"requests.jsonl", "transactions.json", "refunds.json"};
    char path[512];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", statedir, files[i]);
        unlink(path);
    }
    CHECK(rmdir(statedir) == 0);
}

static void sim_stop(void)
{
    int status = 0;

    CHECK(kill(sim_pid, SIGTERM) == 0);
    CHECK(waitpid(sim_pid, &status, 0) == sim_pid);
    sim_pid = 0;
    CHECK(WIFEXITED(status));
    CHECK_INT_EQ(WEXITSTATUS(status), 0);
}

static size_t sink(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* POST /_control with a JSON body. */
static void sim_control(const char *json)
{
    char url[128];
    long status = 0;
    CURL *h = curl_easy_init();

    CHECK(h != NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_control", sim_port);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    CHECK_INT_EQ(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    CHECK_INT_EQ(status, 200);
    curl_easy_cleanup(h);
}

/* The simulator's record of API requests, one JSON object per line. */
static json_object *sim_requests(void)
{
    char path[512], *text, *save = NULL;
    json_object *arr = json_object_new_array();
    struct errbuf e = {0};

    snprintf(path, sizeof(path), "%s/requests.jsonl", statedir);
    text = jsonx_read_file(path, 4 << 20, &e);
    CHECK(text != NULL);
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_object *o = json_tokener_parse(l);
        CHECK(o != NULL);
        json_object_array_add(arr, o);
    }
    free(text);
    return arr;
}

static const char *jstr(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static size_t sim_refund_count(void)
{
    char path[512], *text;
    struct errbuf e = {0};
    json_object *o;
    size_t n;

    snprintf(path, sizeof(path), "%s/refunds.json", statedir);
    if (access(path, F_OK) != 0)
        return 0;
    text = jsonx_read_file(path, 1 << 20, &e);
    CHECK(text != NULL);
    o = json_tokener_parse(text);
    CHECK(o != NULL);
    n = (size_t)json_object_object_length(o);
    json_object_put(o);
    free(text);
    return n;
}

/* ---------------------------------------------------------------- channel */

static void *load_conf(const char *api_url, const char *merchant_key)
{
    char json[2048];
    struct errbuf e = {0};
    void *c;

    snprintf(json, sizeof(json),
             "{\"type\":\"wechatpay\",\"mchid\":\"1900000109\",\"appid\":\"wxd678efh567hg6787\","
             "\"apiv3_key_file\":\"wechat_apiv3_key.txt\",\"platform_certs\":["
             "{\"serial\":\"5157F09EFDC096DE15EBE81A47057A7232F1B8E1\","
             "\"file\":\"wechat_platform1_cert.pem\"},"
             "{\"serial\":\"PUB_KEY_ID_0114000000000000000000000000000002\","
             "\"file\":\"wechat_platform2_pub.pem\"}],"
             "\"merchant_serial\":\"3775B6A45ACD588826D15E583A95F5DD2E3E7A0F\","
             "\"merchant_key_file\":\"%s\",\"api_url\":\"%s\"}",
             merchant_key, api_url);
    c = channel_ops_for("wechatpay")->config_load(json, "channels.wechatpay", keydir, &e);
    if (c == NULL) {
        fprintf(stderr, "config: %s\n", e.msg);
        exit(1);
    }
    return c;
}

#define CHECK_HAS(s, needle)                                                                    \
    do {                                                                                        \
        if (strstr((s), (needle)) == NULL) {                                                    \
            fprintf(stderr, "%s:%d: \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, (s), (needle)); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

static const struct channel_ops *ops;

static void test_query(void *conf)
{
    struct pay_event ev;
    char err[256];

    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_OK);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_SUCCEEDED);
    CHECK_STR_EQ(ev.order_id, "po_paid");
    CHECK_STR_EQ(ev.txn_id, "4200000001202601010000000001");
    CHECK_INT_EQ(ev.amount, 1250);
    CHECK_STR_EQ(ev.currency, "CNY");
    CHECK_STR_EQ(ev.event_id, "query:4200000001202601010000000001:SUCCESS");
    CHECK_STR_EQ(ev.event_type, "wechatpay.query");
    CHECK_INT_EQ(ops->query(conf, "po_open", &ev, err, sizeof(err)), CHANNEL_CALL_OK);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_PROCESSING);
    CHECK_STR_EQ(ev.txn_id, "");
    CHECK_INT_EQ(ops->query(conf, "po_closed", &ev, err, sizeof(err)), CHANNEL_CALL_OK);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_CANCELED);
    /* unknown order: an authentic, final "no" */
    CHECK_INT_EQ(ops->query(conf, "po_nope", &ev, err, sizeof(err)), CHANNEL_CALL_REJECTED);
    CHECK_HAS(err, "ORDER_NOT_EXIST");
    /* characters that need escaping: what we sign is what the server sees */
    CHECK_INT_EQ(ops->query(conf, "po a/b|*", &ev, err, sizeof(err)), CHANNEL_CALL_REJECTED);
    CHECK_HAS(err, "ORDER_NOT_EXIST");
    /* the answer is for another merchant's app: refused even though it is signed */
    CHECK_INT_EQ(ops->query(conf, "po_otherapp", &ev, err, sizeof(err)), CHANNEL_CALL_REJECTED);
    CHECK_HAS(err, "appid");
}

static void test_refund(void *conf)
{
    struct refund_request rq = {
        "po_paid", "4200000001202601010000000001", "rf_1", 500, 1250, "CNY", "duplicate payment"};
    struct refund_result a, b, c;
    json_object *reqs;
    size_t n_before, n_after, refunds = 0;

    CHECK_INT_EQ(sim_refund_count(), 0);
    reqs = sim_requests();
    n_before = json_object_array_length(reqs);
    json_object_put(reqs);
    CHECK_INT_EQ(ops->refund(conf, &rq, &a), CHANNEL_CALL_OK);
    CHECK_STR_EQ(a.state, "PROCESSING");
    CHECK(a.provider_refund_id[0] != '\0');
    /* the same out_refund_no again: the same refund, not a second one */
    CHECK_INT_EQ(ops->refund(conf, &rq, &b), CHANNEL_CALL_OK);
    CHECK_STR_EQ(b.provider_refund_id, a.provider_refund_id);
    CHECK_INT_EQ(sim_refund_count(), 1);
    reqs = sim_requests();
    n_after = json_object_array_length(reqs);
    CHECK_INT_EQ(n_after - n_before, 2);
    for (size_t i = n_before; i < n_after; i++) {
        json_object *r = json_object_array_get_idx(reqs, i), *body, *amount, *v;

        CHECK_STR_EQ(jstr(r, "path"), "/v3/refund/domestic/refunds");
        CHECK(json_object_object_get_ex(r, "auth_ok", &v) && json_object_get_boolean(v));
        body = json_tokener_parse(jstr(r, "body"));
        CHECK(body != NULL);
        CHECK_STR_EQ(jstr(body, "out_refund_no"), "rf_1");
        CHECK_STR_EQ(jstr(body, "transaction_id"), "4200000001202601010000000001");
        CHECK_STR_EQ(jstr(body, "reason"), "duplicate payment");
        CHECK(json_object_object_get_ex(body, "amount", &amount));
        CHECK(json_object_object_get_ex(amount, "refund", &v) &&
              json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 500);
        CHECK(json_object_object_get_ex(amount, "total", &v) && json_object_get_int64(v) == 1250);
        CHECK_STR_EQ(jstr(amount, "currency"), "CNY");
        refunds++;
        json_object_put(body);
    }
    CHECK_INT_EQ(refunds, 2);
    json_object_put(reqs);
    /* a second refund by out_trade_no; then one more than is left: refused for good */
    rq.txn_id = NULL;
    rq.refund_id = "rf_2";
    rq.amount = 700;
    CHECK_INT_EQ(ops->refund(conf, &rq, &c), CHANNEL_CALL_OK);
    rq.refund_id = "rf_3";
    rq.amount = 100;
    CHECK_INT_EQ(ops->refund(conf, &rq, &c), CHANNEL_CALL_REJECTED);
    CHECK_HAS(c.error, "NOT_ENOUGH");
    CHECK_INT_EQ(sim_refund_count(), 2);
    /* a refund answered with a forged signature is not trusted; asking again under the same
     * out_refund_no gets the one refund that exists */
    sim_control("{\"refund_status\":\"SUCCESS\",\"bad_signature_next\":1}");
    rq.refund_id = "rf_4";
    rq.amount = 50;
    rq.order_id = "po_paid2";
    rq.total = 300;
    CHECK_INT_EQ(ops->refund(conf, &rq, &c), CHANNEL_CALL_RETRY);
    CHECK_HAS(c.error, "signature");
    CHECK_INT_EQ(sim_refund_count(), 3);
    CHECK_INT_EQ(ops->refund(conf, &rq, &a), CHANNEL_CALL_OK);
    CHECK_STR_EQ(a.state, "SUCCESS");
    CHECK_INT_EQ(sim_refund_count(), 3);
    /* local checks: nothing is sent */
    rq.amount = 0;
    CHECK_INT_EQ(ops->refund(conf, &rq, &c), CHANNEL_CALL_REJECTED);
    rq.amount = 400;
    CHECK_INT_EQ(ops->refund(conf, &rq, &c), CHANNEL_CALL_REJECTED);
}

static void test_failures(void *conf)
{
    struct pay_event ev;
    char err[256];
    struct refund_request rq = {"po_paid2", NULL, "rf_5", 10, 300, "CNY", NULL};
    struct refund_result rr;

    /* 5xx: try again later, and later works */
    sim_control("{\"fail_next\":1,\"status\":500}");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_RETRY);
    CHECK_HAS(err, "HTTP 500 SYSTEM_ERROR");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_OK);
    sim_control("{\"fail_next\":1,\"status\":503}");
    CHECK_INT_EQ(ops->refund(conf, &rq, &rr), CHANNEL_CALL_RETRY);
    CHECK_INT_EQ(sim_refund_count(), 3);
    /* rate limited */
    sim_control("{\"fail_next\":1,\"status\":429}");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_RETRY);
    CHECK_HAS(err, "FREQUENCY_LIMITED");
    /* SYSTEM_ERROR whatever the status */
    sim_control("{\"fail_next\":1,\"status\":400,\"code\":\"SYSTEM_ERROR\"}");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_RETRY);
    /* other 4xx: refused, with the provider's message */
    sim_control("{\"fail_next\":1,\"status\":400,\"code\":\"INVALID_REQUEST\","
                "\"message\":\"the order is frozen\"}");
    CHECK_INT_EQ(ops->refund(conf, &rq, &rr), CHANNEL_CALL_REJECTED);
    CHECK_HAS(rr.error, "INVALID_REQUEST");
    CHECK_HAS(rr.error, "the order is frozen");
    CHECK_INT_EQ(sim_refund_count(), 3);
    /* answers we cannot verify are never OK */
    sim_control("{\"bad_signature_next\":1}");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_RETRY);
    CHECK_HAS(err, "signature does not match");
    sim_control("{\"unknown_serial_next\":1}");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_RETRY);
    CHECK_HAS(err, "unknown Wechatpay-Serial");
    sim_control("{\"unsigned_next\":1}");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_RETRY);
    CHECK_HAS(err, "missing Wechatpay-");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_OK);
}

/* The simulator really checks signatures: a merchant key it does not know is refused. */
static void test_wrong_merchant_key(void)
{
    char url[64];
    void *bad;
    struct pay_event ev;
    char err[256];
    json_object *reqs, *last, *v;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", sim_port);
    bad = load_conf(url, "wechat_other_key.pem");
    CHECK_INT_EQ(ops->query(bad, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_REJECTED);
    CHECK_HAS(err, "SIGN_ERROR");
    CHECK_HAS(err, "unsigned response");
    reqs = sim_requests();
    last = json_object_array_get_idx(reqs, json_object_array_length(reqs) - 1);
    CHECK(json_object_object_get_ex(last, "auth_ok", &v) && !json_object_get_boolean(v));
    CHECK_HAS(jstr(last, "auth_error"), "merchant public key");
    json_object_put(reqs);
    ops->config_free(bad);
}

/* Nobody listening: a transport error, try again later. */
static void test_transport(void)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char url[64], err[256];
    struct pay_event ev;
    void *conf;

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    close(fd); /* bound, never listened: connections are refused */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sa.sin_port));
    conf = load_conf(url, "wechat_merchant_key.pem");
    CHECK_INT_EQ(ops->query(conf, "po_paid", &ev, err, sizeof(err)), CHANNEL_CALL_RETRY);
    CHECK(err[0] != '\0');
    ops->config_free(conf);
}

/* Every request the working channel sent verified at the simulator. */
static void test_all_signed(void)
{
    json_object *reqs = sim_requests(), *v;
    size_t n = json_object_array_length(reqs), bad = 0;

    for (size_t i = 0; i < n; i++) {
        json_object *r = json_object_array_get_idx(reqs, i);
        CHECK_STR_EQ(jstr(json_object_object_get(r, "headers"), "accept"), "application/json");
        if (!(json_object_object_get_ex(r, "auth_ok", &v) && json_object_get_boolean(v)))
            bad++;
    }
    CHECK(n >= 20);
    CHECK_INT_EQ(bad, 1); /* test_wrong_merchant_key's */
    json_object_put(reqs);
}

/* ---------------------------------------------------------------- notifications */

static const char *hdr_of(void *ctx, const char *name)
{
    json_object *h = ctx;
    json_object_object_foreach(h, k, v)
    {
        if (strcasecmp(k, name) == 0)
            return json_object_get_string(v);
    }
    return NULL;
}

/* Runs the simulator's builder with args; verify + parse; returns 0 or -1 (e filled). */
static int sim_notification(void *conf, const char *args, struct pay_event *ev, struct errbuf *e)
{
    char cmd[8192], out[16384];
    size_t n;
    FILE *p;
    json_object *o, *h, *b;
    struct channel_request req;
    int rc;

    snprintf(cmd, sizeof(cmd), "%s %s --make-notification %s", PYTHON, sim_script, args);
    p = popen(cmd, "r");
    CHECK(p != NULL);
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    CHECK_INT_EQ(pclose(p), 0);
    o = json_tokener_parse(out);
    CHECK(o != NULL);
    CHECK(json_object_object_get_ex(o, "headers", &h));
    CHECK(json_object_object_get_ex(o, "body", &b));
    req.body = json_object_get_string(b);
    req.body_len = (size_t)json_object_get_string_len(b);
    req.header = hdr_of;
    req.ctx = h;
    errbuf_clear(e);
    rc = ops->verify(conf, &req, (int64_t)time(NULL), e);
    if (rc == 0)
        rc = ops->parse(conf, req.body, req.body_len, ev, e);
    json_object_put(o);
    return rc;
}

static void test_notifications(void *conf)
{
    struct pay_event ev;
    struct errbuf e = {0};
    char args[4096];

    CHECK_INT_EQ(sim_notification(conf,
                                  "--out-trade-no po_paid --transaction-id 4200000009 "
                                  "--total 1250 --event-id EV-sim-1",
                                  &ev, &e),
                 0);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_SUCCEEDED);
    CHECK_STR_EQ(ev.event_id, "EV-sim-1");
    CHECK_STR_EQ(ev.event_type, "wechatpay.transaction.success");
    CHECK_STR_EQ(ev.order_id, "po_paid");
    CHECK_STR_EQ(ev.txn_id, "4200000009");
    CHECK_INT_EQ(ev.amount, 1250);
    CHECK_STR_EQ(ev.currency, "CNY");
    /* signed under the second (rotated-in) platform key */
    snprintf(args, sizeof(args),
             "--out-trade-no po_paid --platform-key %s/wechat_platform2_key.pem "
             "--platform-serial PUB_KEY_ID_0114000000000000000000000000000002",
             keydir);
    CHECK_INT_EQ(sim_notification(conf, args, &ev, &e), 0);
    CHECK_INT_EQ(sim_notification(conf, "--out-trade-no po_paid --signtest", &ev, &e), -1);
    CHECK_HAS(e.msg, "probe");
    CHECK_INT_EQ(sim_notification(conf, "--out-trade-no po_paid --skew 400", &ev, &e), -1);
    CHECK_HAS(e.msg, "tolerance");
    CHECK_INT_EQ(sim_notification(conf, "--out-trade-no po_paid --total 12.5", &ev, &e), -1);
    CHECK_HAS(e.msg, "amount.total");
    CHECK_INT_EQ(sim_notification(conf, "--out-trade-no po_paid --mchid 1900000110", &ev, &e), -1);
    CHECK_HAS(e.msg, "mchid");
    CHECK_INT_EQ(sim_notification(conf, "--out-trade-no po_r --event-type REFUND.SUCCESS", &ev, &e),
                 0);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_OTHER);
    CHECK_STR_EQ(ev.event_type, "wechatpay.refund.success");
}

int main(void)
{
    const char *s = getenv("PAYNOTIFY_SOURCE_DIR");
    const char *tmp = getenv("PAYNOTIFY_TEST_DIR");
    char path[512], url[64];
    void *conf;

    snprintf(src, sizeof(src), "%s", s ? s : ".");
    snprintf(keydir, sizeof(keydir), "%s/tests/data/keys", src);
    snprintf(sim_script, sizeof(sim_script), "%s/tests/fakes/wechatpay_sim.py", src);
    snprintf(statedir, sizeof(statedir), "%s/wechatpay-sim-XXXXXX", tmp ? tmp : "/tmp");
    CHECK(mkdtemp(statedir) != NULL);
    snprintf(path, sizeof(path), "%s/transactions.json", statedir);
    write_file(path, "{\"po_paid\":{\"mchid\":\"1900000109\",\"appid\":\"wxd678efh567hg6787\","
                     "\"out_trade_no\":\"po_paid\",\"transaction_id\":"
                     "\"4200000001202601010000000001\",\"trade_type\":\"JSAPI\","
                     "\"trade_state\":\"SUCCESS\",\"amount\":{\"total\":1250,\"payer_total\":1250,"
                     "\"currency\":\"CNY\",\"payer_currency\":\"CNY\"}},"
                     "\"po_open\":{\"mchid\":\"1900000109\",\"appid\":\"wxd678efh567hg6787\","
                     "\"out_trade_no\":\"po_open\",\"trade_state\":\"NOTPAY\","
                     "\"amount\":{\"total\":800}},"
                     "\"po_otherapp\":{\"mchid\":\"1900000109\",\"appid\":\"wx_someone_else\","
                     "\"out_trade_no\":\"po_otherapp\",\"trade_state\":\"NOTPAY\"}}");
    CHECK_INT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    ops = channel_ops_for("wechatpay");
    CHECK(ops != NULL);
    sim_start();
    sim_control("{\"transactions\":[{\"out_trade_no\":\"po_closed\",\"state\":\"CLOSED\"},"
                "{\"out_trade_no\":\"po_paid2\",\"total\":300}]}");
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", sim_port);
    conf = load_conf(url, "wechat_merchant_key.pem");
    test_query(conf);
    test_refund(conf);
    test_failures(conf);
    test_wrong_merchant_key();
    test_transport();
    test_all_signed();
    test_notifications(conf);
    ops->config_free(conf);
    sim_stop();
    sim_cleanup();
    curl_global_cleanup();
    TEST_PASS();
    return 0;
}
