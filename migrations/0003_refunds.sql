-- 0003_refunds: refunds paynotify starts itself (a duplicate payment, a payment after the
-- order was closed). Written in the same transaction as the payment-log row that found the
-- problem; sent by the worker's refunder, retried until the provider answers.

CREATE TABLE IF NOT EXISTS refunds (
    id                 BIGINT        NOT NULL AUTO_INCREMENT,
    refund_id          VARCHAR(64)   NOT NULL,              -- our idempotency key (Idempotency-Key, out_request_no, out_refund_no)
    order_id           VARCHAR(64)   NOT NULL,
    channel            VARCHAR(64)   NOT NULL,
    provider_txn_id    VARCHAR(128)  NOT NULL,              -- the payment being refunded
    amount             BIGINT        NOT NULL,              -- minor units to refund
    total              BIGINT        NOT NULL,              -- that payment's total
    currency           CHAR(3)       NOT NULL,
    reason             VARCHAR(32)   NOT NULL,              -- duplicate_payment, paid_after_close
    status             VARCHAR(16)   NOT NULL,              -- PENDING, SUCCEEDED, REJECTED
    attempts           INT           NOT NULL DEFAULT 0,
    next_attempt_at    DATETIME(3)   NOT NULL,
    provider_refund_id VARCHAR(128)  NULL,
    provider_state     VARCHAR(32)   NULL,
    last_error         VARCHAR(512)  NULL,
    created_at         DATETIME(3)   NOT NULL,
    updated_at         DATETIME(3)   NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_refunds_refund_id (refund_id),
    UNIQUE KEY uq_refunds_payment (channel, provider_txn_id), -- a payment is refunded at most once
    KEY ix_refunds_due (status, next_attempt_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Expired orders are closed by the worker's sweeper.
CREATE INDEX ix_orders_expire ON orders (status, expire_at);
