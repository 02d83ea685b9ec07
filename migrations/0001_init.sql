-- 0001_init: orders, the payment log and the notification outbox.
-- Forward-only: never edit this file after it is merged; add 0002_... instead.

CREATE TABLE IF NOT EXISTS orders (
    id                VARCHAR(32)   NOT NULL,               -- ours; the provider's out_trade_no / metadata.order_id
    business          VARCHAR(64)   NOT NULL,
    business_order_id VARCHAR(128)  NOT NULL,
    amount            BIGINT        NOT NULL,               -- integer minor units, never floating point
    currency          CHAR(3)       NOT NULL,               -- ISO 4217, upper case
    channel           VARCHAR(64)   NOT NULL,
    subject           VARCHAR(256)  NOT NULL,
    notify_url        VARCHAR(2048) NOT NULL,
    expire_at         DATETIME(3)   NULL,
    cancel_url        VARCHAR(2048) NULL,
    request_hash      CHAR(64)      NOT NULL,               -- sha256 of the create request: same id + other content = 409
    status            VARCHAR(16)   NOT NULL,               -- PENDING, PAID, CLOSED, REFUNDED
    provider_txn_id   VARCHAR(128)  NULL,
    paid_at           DATETIME(3)   NULL,
    notify_status     VARCHAR(16)   NOT NULL DEFAULT 'NONE', -- NONE, PENDING, DELIVERED, FAILED
    notify_attempts   INT           NOT NULL DEFAULT 0,
    notify_last_error VARCHAR(512)  NULL,
    version           INT           NOT NULL DEFAULT 0,     -- compare-and-set guard
    created_at        DATETIME(3)   NOT NULL,
    updated_at        DATETIME(3)   NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_orders_business_order (business, business_order_id),
    KEY ix_orders_status (status, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per interaction with a provider. The unique key makes applying the same
-- provider event twice impossible, whatever Redis says.
CREATE TABLE IF NOT EXISTS payment_log (
    id                BIGINT        NOT NULL AUTO_INCREMENT,
    channel           VARCHAR(64)   NOT NULL,
    kind              VARCHAR(16)   NOT NULL,               -- callback, query, refund
    provider_event_id VARCHAR(128)  NOT NULL,
    event_type        VARCHAR(64)   NOT NULL,
    order_id          VARCHAR(64)   NULL,
    provider_txn_id   VARCHAR(128)  NULL,
    amount            BIGINT        NULL,
    currency          CHAR(3)       NULL,
    outcome           VARCHAR(32)   NOT NULL,               -- applied, ignored, amount_mismatch, unknown_order, ...
    detail            VARCHAR(512)  NULL,
    callback_id       VARCHAR(64)   NULL,
    raw               MEDIUMBLOB    NULL,
    created_at        DATETIME(3)   NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_payment_log_event (channel, kind, provider_event_id),
    KEY ix_payment_log_order (order_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The outbox: written in the same transaction as the order change; the notify stage
-- delivers it and the sweeper republishes rows that were committed but never published.
CREATE TABLE IF NOT EXISTS notifications (
    id              BIGINT        NOT NULL AUTO_INCREMENT,
    webhook_id      VARCHAR(64)   NOT NULL,                 -- Standard Webhooks id, the same on every retry
    order_id        VARCHAR(32)   NOT NULL,
    business        VARCHAR(64)   NOT NULL,
    event_type      VARCHAR(64)   NOT NULL,                 -- order.paid, order.closed, order.refunded, ...
    notify_url      VARCHAR(2048) NOT NULL,
    payload         MEDIUMTEXT    NOT NULL,                 -- the order JSON at the time of the event
    status          VARCHAR(16)   NOT NULL,                 -- PENDING, DELIVERED, FAILED
    attempts        INT           NOT NULL DEFAULT 0,
    next_attempt_at DATETIME(3)   NULL,
    last_attempt_at DATETIME(3)   NULL,
    last_http_status INT          NULL,
    last_error      VARCHAR(512)  NULL,
    published_at    DATETIME(3)   NULL,                     -- broker confirmed the notify message
    created_at      DATETIME(3)   NOT NULL,
    updated_at      DATETIME(3)   NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_notifications_webhook (webhook_id),
    UNIQUE KEY uq_notifications_order_event (order_id, event_type),
    KEY ix_notifications_unpublished (status, published_at, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
