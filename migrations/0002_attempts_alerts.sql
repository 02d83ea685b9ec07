-- 0002_attempts_alerts: the webhook attempt history and durable on-call alerts.

-- One row per webhook attempt (attempt 0 is the immediate one, k the k-th retry).
CREATE TABLE IF NOT EXISTS notification_attempts (
    id              BIGINT        NOT NULL AUTO_INCREMENT,
    notification_id BIGINT        NOT NULL,
    attempt         INT           NOT NULL,
    attempted_at    DATETIME(3)   NOT NULL,
    http_status     INT           NULL,                     -- NULL: no HTTP response
    error           VARCHAR(512)  NULL,                     -- NULL when delivered
    latency_ms      INT           NOT NULL,
    response_head   VARCHAR(256)  NULL,                     -- first bytes of the response body
    PRIMARY KEY (id),
    KEY ix_attempts_notification (notification_id, attempt)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Alerts are an outbox too: written (deduplicated by dedup_key) in the same transaction as
-- the event they report, sent by the worker's alerter, retried until sent.
CREATE TABLE IF NOT EXISTS alerts (
    id              BIGINT        NOT NULL AUTO_INCREMENT,
    dedup_key       VARCHAR(191)  NOT NULL,                 -- e.g. notify_failed:<order_id>
    kind            VARCHAR(32)   NOT NULL,                 -- notify_failed, amount_mismatch, duplicate_payment, ...
    business        VARCHAR(64)   NULL,
    order_id        VARCHAR(64)   NULL,
    subject         VARCHAR(256)  NOT NULL,
    body            TEXT          NOT NULL,
    status          VARCHAR(16)   NOT NULL,                 -- PENDING, SENT, SUMMARIZED
    sms_done        TINYINT       NOT NULL DEFAULT 0,
    mail_done       TINYINT       NOT NULL DEFAULT 0,
    attempts        INT           NOT NULL DEFAULT 0,
    next_attempt_at DATETIME(3)   NOT NULL,
    last_error      VARCHAR(512)  NULL,
    summary_id      BIGINT        NULL,                     -- the alert that summarised this one
    created_at      DATETIME(3)   NOT NULL,
    sent_at         DATETIME(3)   NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_alerts_dedup (dedup_key),
    KEY ix_alerts_due (status, next_attempt_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
