/* tests/integration/test_alipay_api.c: the Alipay channel's query and refund clients over
 * real HTTP against tests/fakes/alipay_sim.py (started here on a free loopback port, with
 * a state directory of its own). The simulator checks each request's RSA2 signature with
 * the app public key in its own (Python) code and signs its answers with the Alipay
 * private key; this test reads what the simulator recorded, not only what the client
 * said. Covers: query of an existing / missing trade, refunds repeated under one
 * out_request_no (one refund at the simulator, also across a lost reply and a simulator
 * restart), 503 / code 20000 / ACQ.SYSTEM_ERROR / connection refused -> RETRY, answers
 * signed with the wrong key or not signed -> never OK, and requests the simulator
 * refuses (wrong app key, wrong app_id). Needs no RabbitMQ, Redis or MariaDB. */
#include "channel/alipay.h"
#include "channel/channel.h"
#include "tests/unit/check.h"

#include <curl/curl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define APP_ID "2021000000000001"

static char src_dir[1024];
static char state_dir[256];
static int sim_port;
static pid_t sim_pid;

/* ------------------------------------------------------------------ the simulator */

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    CHECK(fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void sim_stop(void)
{
    int st;

    if (sim_pid <= 0)
        return;
    kill(sim_pid, SIGTERM);
    waitpid(sim_pid, &st, 0);
    sim_pid = 0;
}

static void sim_start(void)
{
    const char *py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    char script[1200], port_s[16], line[64] = "";
    struct pollfd pfd;
    size_t n = 0;
    int fds[2];

    snprintf(script, sizeof(script), "%s/tests/fakes/alipay_sim.py", src_dir);
    snprintf(port_s, sizeof(port_s), "%d", sim_port);
    CHECK(pipe(fds) == 0);
    sim_pid = fork();
    CHECK(sim_pid >= 0);
    if (sim_pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        execlp(py, py, script, port_s, state_dir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (n + 1 < sizeof(line) && strchr(line, '\n') == NULL) {
        ssize_t r;

        CHECK(poll(&pfd, 1, 15000) == 1);
        r = read(fds[0], line + n, sizeof(line) - 1 - n);
        CHECK(r > 0);
        n += (size_t)r;
        line[n] = '\0';
    }
    close(fds[0]);
    if (strcmp(line, "ready\n") != 0) {
        fprintf(stderr, "alipay_sim.py said \"%s\"\n", line);
        CHECK(0);
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    sim_stop();
    if (state_dir[0] != '\0')
        nftw(state_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------------ talking to it */

struct body {
    char *data;
    size_t len;
};

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;

    b->data = realloc(b->data, b->len + size * n + 1);
    CHECK(b->data != NULL);
    memcpy(b->data + b->len, p, size * n);
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

/* GET (post NULL) or POST JSON to the simulator; returns its JSON answer (caller puts). */
static json_object *sim_http(const char *path, const char *post)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    struct body b = {NULL, 0};
    char url[256];
    long status = 0;
    json_object *o;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", sim_port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    if (post != NULL) {
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
    }
    CHECK_INT_EQ(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    CHECK_INT_EQ(status, 200);
    o = json_tokener_parse(b.data);
    CHECK(o != NULL);
    free(b.data);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return o;
}

static void sim_control(const char *json)
{
    json_object_put(sim_http("/_control", json));
}

/* Adds a trade at the simulator; its generated trade_no into trade_no. */
static void sim_trade(const char *out_trade_no, const char *yuan, const char *status,
                      char *trade_no, size_t cap)
{
    char cmd[512];
    json_object *o, *trades, *t, *v;

    snprintf(cmd, sizeof(cmd),
             "{\"trade\":{\"out_trade_no\":\"%s\",\"total_amount\":\"%s\","
             "\"trade_status\":\"%s\"}}",
             out_trade_no, yuan, status);
    o = sim_http("/_control", cmd);
    CHECK(json_object_object_get_ex(o, "trades", &trades));
    CHECK(json_object_object_get_ex(trades, out_trade_no, &t));
    CHECK(json_object_object_get_ex(t, "trade_no", &v));
    snprintf(trade_no, cap, "%s", json_object_get_string(v));
    json_object_put(o);
}

/* Refunds the simulator holds for (out_trade_no, out_request_no), and their sum in fen. */
static int sim_refunds(const char *out_trade_no, const char *out_request_no, char *amount,
                       size_t cap)
{
    json_object *st = sim_http("/_state", NULL), *list;
    int n = 0;

    CHECK(json_object_object_get_ex(st, "refunds", &list));
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *r = json_object_array_get_idx(list, i), *a, *b, *c;

        CHECK(json_object_object_get_ex(r, "out_trade_no", &a));
        CHECK(json_object_object_get_ex(r, "out_request_no", &b));
        CHECK(json_object_object_get_ex(r, "refund_amount", &c));
        if (strcmp(json_object_get_string(a), out_trade_no) == 0 &&
            strcmp(json_object_get_string(b), out_request_no) == 0) {
            n++;
            if (amount != NULL)
                snprintf(amount, cap, "%s", json_object_get_string(c));
        }
    }
    json_object_put(st);
    return n;
}

/* The last request the simulator recorded (requests.jsonl), parsed; caller puts. */
static json_object *sim_last_request(void)
{
    char path[512], line[65536], last[65536] = "";
    FILE *f;
    json_object *o;

    snprintf(path, sizeof(path), "%s/requests.jsonl", state_dir);
    f = fopen(path, "r");
    CHECK(f != NULL);
    while (fgets(line, sizeof(line), f) != NULL)
        memcpy(last, line, sizeof(line));
    fclose(f);
    o = json_tokener_parse(last);
    CHECK(o != NULL);
    return o;
}

static const char *jget(json_object *o, const char *path_a, const char *path_b)
{
    json_object *v;

    CHECK(json_object_object_get_ex(o, path_a, &v));
    if (path_b != NULL)
        CHECK(json_object_object_get_ex(v, path_b, &v));
    return json_object_get_string(v);
}

/* ------------------------------------------------------------------ the channel */

static void *conf_with(const char *app_id, const char *app_key, int port)
{
    char json[1024], keys[1200];
    struct errbuf e = {0};
    void *c;

    snprintf(json, sizeof(json),
             "{\"type\":\"alipay\",\"app_id\":\"%s\","
             "\"alipay_public_key_file\":\"alipay_public_key.pem\","
             "\"app_private_key_file\":\"%s\",\"api_url\":\"http://127.0.0.1:%d/gateway.do\"}",
             app_id, app_key, port);
    snprintf(keys, sizeof(keys), "%s/tests/data/keys", src_dir);
    c = alipay_channel_ops.config_load(json, "channels.alipay", keys, &e);
    if (c == NULL)
        fprintf(stderr, "config_load: %s\n", e.msg);
    CHECK(c != NULL);
    return c;
}

static enum channel_call_status refund(const void *conf, const char *order, const char *txn,
                                       const char *refund_id, int64_t fen, struct refund_result *rr)
{
    struct refund_request r = {order, txn, refund_id, fen, fen, "CNY", "duplicate payment"};

    memset(rr, 0xAB, sizeof(*rr)); /* the client must clear it */
    return alipay_channel_ops.refund(conf, &r, rr);
}

static void expect_status(enum channel_call_status got, enum channel_call_status want,
                          const char *err, const char *needle)
{
    if (got != want || (needle != NULL && strstr(err, needle) == NULL))
        fprintf(stderr, "expected status %d with \"%s\", got %d \"%s\"\n", want,
                needle ? needle : "", got, err);
    CHECK_INT_EQ(got, want);
    if (needle != NULL)
        CHECK(strstr(err, needle) != NULL);
}

int main(void)
{
    const char *src = getenv("PAYNOTIFY_SOURCE_DIR");
    char tn_paid[64], tn_wait[64], tn_small[64], amount[32], err[256];
    struct pay_event ev;
    struct refund_result rr;
    enum channel_call_status st;
    void *conf, *wrong_key, *wrong_app, *nowhere;
    json_object *req;

    snprintf(src_dir, sizeof(src_dir), "%s", src ? src : ".");
    snprintf(state_dir, sizeof(state_dir), "/tmp/paynotify-alipay-sim-XXXXXX");
    CHECK(mkdtemp(state_dir) != NULL);
    atexit(cleanup);
    signal(SIGPIPE, SIG_IGN);
    CHECK_INT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    sim_port = free_port();
    sim_start();

    conf = conf_with(APP_ID, "alipay_app_private_key.pem", sim_port);
    wrong_key = conf_with(APP_ID, "alipay_other_key.pem", sim_port);
    wrong_app = conf_with("2021000000000999", "alipay_app_private_key.pem", sim_port);
    nowhere = conf_with(APP_ID, "alipay_app_private_key.pem", free_port());

    sim_trade("ord_paid", "12.50", "TRADE_SUCCESS", tn_paid, sizeof(tn_paid));
    sim_trade("ord_wait", "3.00", "WAIT_BUYER_PAY", tn_wait, sizeof(tn_wait));
    sim_trade("ord_small", "0.02", "TRADE_SUCCESS", tn_small, sizeof(tn_small));

    /* Query: an existing trade, as a notification would describe it. */
    st = alipay_channel_ops.query(conf, "ord_paid", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_OK, err, NULL);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_SUCCEEDED);
    CHECK_STR_EQ(ev.event_type, "alipay.trade_success");
    CHECK_STR_EQ(ev.order_id, "ord_paid");
    CHECK_STR_EQ(ev.txn_id, tn_paid);
    CHECK_INT_EQ(ev.amount, 1250);
    CHECK_STR_EQ(ev.currency, "CNY");
    CHECK(strncmp(ev.event_id, tn_paid, strlen(tn_paid)) == 0);
    CHECK(strstr(ev.event_id, ":TRADE_SUCCESS:") != NULL);
    /* What went over the wire: signed (checked by the simulator's own code), as specified. */
    req = sim_last_request();
    CHECK(json_object_get_boolean(json_object_object_get(req, "sign_ok")));
    CHECK_STR_EQ(jget(req, "params", "method"), "alipay.trade.query");
    CHECK_STR_EQ(jget(req, "params", "format"), "JSON");
    CHECK_STR_EQ(jget(req, "params", "charset"), "utf-8");
    CHECK_STR_EQ(jget(req, "params", "sign_type"), "RSA2");
    CHECK_STR_EQ(jget(req, "params", "version"), "1.0");
    CHECK_STR_EQ(jget(req, "params", "app_id"), APP_ID);
    CHECK_STR_EQ(jget(req, "params", "biz_content"), "{\"out_trade_no\":\"ord_paid\"}");
    CHECK(strncmp(jget(req, "content_type", NULL), "application/x-www-form-urlencoded", 33) == 0);
    json_object_put(req);

    st = alipay_channel_ops.query(conf, "ord_wait", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_OK, err, NULL);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_PROCESSING);
    CHECK_INT_EQ(ev.amount, 300);

    /* Query: a trade Alipay does not know. */
    st = alipay_channel_ops.query(conf, "ord_none", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_REJECTED, err, "ACQ.TRADE_NOT_EXIST");
    CHECK(strstr(err, "交易不存在") != NULL);

    /* Refund twice under one out_request_no: one refund at the simulator. */
    st = refund(conf, "ord_paid", tn_paid, "rf_1", 500, &rr);
    expect_status(st, CHANNEL_CALL_OK, rr.error, NULL);
    CHECK_STR_EQ(rr.state, "REFUNDED");
    CHECK(strstr(rr.provider_refund_id, "rf_1") != NULL);
    req = sim_last_request();
    CHECK(json_object_get_boolean(json_object_object_get(req, "sign_ok")));
    {
        json_object *biz = json_tokener_parse(jget(req, "params", "biz_content"));
        CHECK(biz != NULL);
        CHECK_STR_EQ(jget(biz, "out_trade_no", NULL), "ord_paid");
        CHECK_STR_EQ(jget(biz, "trade_no", NULL), tn_paid);
        CHECK_STR_EQ(jget(biz, "refund_amount", NULL), "5.00");
        CHECK_STR_EQ(jget(biz, "out_request_no", NULL), "rf_1");
        CHECK_STR_EQ(jget(biz, "refund_reason", NULL), "duplicate payment");
        json_object_put(biz);
    }
    CHECK_STR_EQ(jget(req, "answer", "fund_change"), "Y");
    json_object_put(req);
    st = refund(conf, "ord_paid", tn_paid, "rf_1", 500, &rr);
    expect_status(st, CHANNEL_CALL_OK, rr.error, NULL);
    req = sim_last_request();
    CHECK_STR_EQ(jget(req, "answer", "fund_change"), "N");
    json_object_put(req);
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_1", amount, sizeof(amount)), 1);
    CHECK_STR_EQ(amount, "5.00");
    /* The same key with another amount is refused, not refunded again. */
    st = refund(conf, "ord_paid", tn_paid, "rf_1", 600, &rr);
    expect_status(st, CHANNEL_CALL_REJECTED, rr.error, "ACQ.DISCORDANT_REPEAT_REQUEST");
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_1", NULL, 0), 1);

    /* The gateway answering 503: RETRY, nothing refunded; the retry refunds once. */
    sim_control("{\"fail_next\":1,\"status\":503}");
    st = refund(conf, "ord_paid", tn_paid, "rf_2", 100, &rr);
    expect_status(st, CHANNEL_CALL_RETRY, rr.error, "HTTP 503");
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_2", NULL, 0), 0);
    st = refund(conf, "ord_paid", tn_paid, "rf_2", 100, &rr);
    expect_status(st, CHANNEL_CALL_OK, rr.error, NULL);
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_2", NULL, 0), 1);

    /* The refund done but the reply lost (503 after the work): RETRY; the retry is
     * answered fund_change N and the money moved once. */
    sim_control("{\"fail_next\":1,\"status\":503,\"after_apply\":true}");
    st = refund(conf, "ord_paid", tn_paid, "rf_3", 100, &rr);
    expect_status(st, CHANNEL_CALL_RETRY, rr.error, "HTTP 503");
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_3", NULL, 0), 1);
    st = refund(conf, "ord_paid", tn_paid, "rf_3", 100, &rr);
    expect_status(st, CHANNEL_CALL_OK, rr.error, NULL);
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_3", NULL, 0), 1);

    /* Business-level "try later": code 20000, and ACQ.SYSTEM_ERROR. */
    sim_control("{\"fail_next\":1,\"code\":\"20000\",\"sub_code\":\"isp.unknown-error\"}");
    st = alipay_channel_ops.query(conf, "ord_paid", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_RETRY, err, "20000");
    sim_control("{\"fail_next\":1,\"code\":\"40004\",\"sub_code\":\"ACQ.SYSTEM_ERROR\"}");
    st = refund(conf, "ord_paid", tn_paid, "rf_4", 100, &rr);
    expect_status(st, CHANNEL_CALL_RETRY, rr.error, "ACQ.SYSTEM_ERROR");
    sim_control("{\"fail_next\":1,\"status\":502}");
    st = alipay_channel_ops.query(conf, "ord_paid", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_RETRY, err, "HTTP 502");

    /* Answers signed with a key Alipay does not hold, or not signed: never OK. */
    sim_control("{\"bad_sign_next\":1}");
    st = alipay_channel_ops.query(conf, "ord_paid", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_RETRY, err, "signature does not verify");
    sim_control("{\"bad_sign_next\":1}");
    st = refund(conf, "ord_paid", tn_paid, "rf_5", 100, &rr);
    CHECK(st != CHANNEL_CALL_OK);
    CHECK(strstr(rr.error, "signature does not verify") != NULL);
    sim_control("{\"unsigned_next\":1}");
    st = alipay_channel_ops.query(conf, "ord_paid", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_RETRY, err, "unsigned success response");
    /* An unsigned error is still an error (moves no money). */
    sim_control("{\"unsigned_next\":1}");
    st = alipay_channel_ops.query(conf, "ord_none", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_REJECTED, err, "ACQ.TRADE_NOT_EXIST");
    /* rf_5 did go through at the simulator (only its answer was forged): asking again
     * with the same key is answered properly and refunds nothing more. */
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_5", NULL, 0), 1);
    st = refund(conf, "ord_paid", tn_paid, "rf_5", 100, &rr);
    expect_status(st, CHANNEL_CALL_OK, rr.error, NULL);
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_5", NULL, 0), 1);

    /* The simulator checks our signatures: a request signed with the wrong key, or for
     * another app, is refused there. */
    st = alipay_channel_ops.query(wrong_key, "ord_paid", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_REJECTED, err, "isv.invalid-signature");
    req = sim_last_request();
    CHECK(!json_object_get_boolean(json_object_object_get(req, "sign_ok")));
    json_object_put(req);
    st = refund(wrong_key, "ord_paid", tn_paid, "rf_6", 100, &rr);
    expect_status(st, CHANNEL_CALL_REJECTED, rr.error, "isv.invalid-signature");
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_6", NULL, 0), 0);
    st = alipay_channel_ops.query(wrong_app, "ord_paid", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_REJECTED, err, "isv.invalid-app-id");

    /* Nobody listening: RETRY. */
    st = alipay_channel_ops.query(nowhere, "ord_paid", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_RETRY, err, "alipay.trade.query: ");
    st = refund(nowhere, "ord_paid", tn_paid, "rf_7", 100, &rr);
    expect_status(st, CHANNEL_CALL_RETRY, rr.error, "alipay.trade.refund: ");

    /* More than is left: refused. Then the rest, exactly: the trade closes. */
    st = refund(conf, "ord_small", tn_small, "rf_s1", 3, &rr);
    expect_status(st, CHANNEL_CALL_REJECTED, rr.error, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL");
    st = refund(conf, "ord_small", NULL, "rf_s2", 2, &rr);
    expect_status(st, CHANNEL_CALL_OK, rr.error, NULL);
    CHECK_INT_EQ(sim_refunds("ord_small", "rf_s2", amount, sizeof(amount)), 1);
    CHECK_STR_EQ(amount, "0.02");
    st = alipay_channel_ops.query(conf, "ord_small", &ev, err, sizeof(err));
    expect_status(st, CHANNEL_CALL_OK, err, NULL);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_CANCELED);
    CHECK_STR_EQ(ev.event_type, "alipay.trade_closed");
    /* Refunding a trade that was never paid: refused. */
    st = refund(conf, "ord_wait", tn_wait, "rf_w", 100, &rr);
    expect_status(st, CHANNEL_CALL_REJECTED, rr.error, "ACQ.TRADE_STATUS_ERROR");

    /* A restarted simulator keeps its refunds: the same key still refunds once. */
    sim_stop();
    sim_start();
    st = refund(conf, "ord_paid", tn_paid, "rf_1", 500, &rr);
    expect_status(st, CHANNEL_CALL_OK, rr.error, NULL);
    CHECK_INT_EQ(sim_refunds("ord_paid", "rf_1", NULL, 0), 1);

    alipay_channel_ops.config_free(conf);
    alipay_channel_ops.config_free(wrong_key);
    alipay_channel_ops.config_free(wrong_app);
    alipay_channel_ops.config_free(nowhere);
    curl_global_cleanup();
    TEST_PASS();
    return 0;
}
