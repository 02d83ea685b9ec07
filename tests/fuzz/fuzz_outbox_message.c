/* tests/fuzz/fuzz_outbox_message.c: the notify queue's message (store/orders.c
 * outbox_message_parse), which anyone who can publish to the notify queue controls.
 * An accepted id must be positive and survive outbox_message() -> parse. */
#include "store/orders.h"
#include "store/outbox.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy with no NUL: AMQP bodies are not strings. */
    uint8_t *copy = malloc(size ? size : 1);
    int64_t id = 0, again = 0;
    char msg[64];

    if (copy == NULL)
        abort();
    if (size != 0)
        memcpy(copy, data, size);
    if (outbox_message_parse(copy, size, &id) == 0) {
        FUZZ_CHECK(id > 0);
        outbox_message(id, msg, sizeof(msg));
        FUZZ_CHECK(outbox_message_parse(msg, strlen(msg), &again) == 0 && again == id);
    }
    free(copy);
    return 0;
}
