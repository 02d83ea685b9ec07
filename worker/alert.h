/* worker/alert.h: the alerter, a thread that sends the alerts outbox (store/alerts.h) to
 * on-call staff by SMS (POST cfg->alerts.sms_url, JSON {"to","text"}, once per sms_to number)
 * and email (SMTP to every mail_to), retrying with backoff until each configured channel took
 * the alert, and folding storms into summaries. */
#ifndef PAYNOTIFY_WORKER_ALERT_H
#define PAYNOTIFY_WORKER_ALERT_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/metrics.h"

struct cfg;
typedef struct alerter alerter;

struct alerter_opts {
    int64_t poll_ms;         /* default 1000 */
    int64_t storm_window_ms; /* default 300000 */
    int storm_threshold;     /* default 3: more than this many due alerts of one kind+business
                                in the window are summarised */
};

/* Retry delays after failed attempt 1, 2, 3, ...: 5 s, 30 s, 2 min, 10 min, then 30 min. */
int64_t alerter_backoff_ms(int attempts);

/* Starts the thread, which opens its own MySQL connection (and reconnects on its own) and
 * exits once *stop is set, aborting a transfer in progress (that alert is retried later).
 * cfg, reg and stop are borrowed and must outlive the alerter; o is copied and may be NULL
 * (all defaults; a zero field means its default too). Registers in reg:
 *   paynotify_worker_alerts_total{channel="sms|email",outcome="sent|failed"} (one per SMS
 *   message or email transaction), paynotify_worker_alerts_summarized_total (alerts folded
 *   into summaries), gauge paynotify_worker_alerts_pending.
 * curl_global_init() and db_library_init() must have run. NULL if the thread could not be
 * created. Free with alerter_join(). */
alerter *alerter_start(const struct cfg *cfg, metrics *reg, const struct alerter_opts *o,
                       atomic_int *stop);
/* Waits for the thread (set *stop first) and frees the alerter. NULL-safe. */
void alerter_join(alerter *a);

#endif
