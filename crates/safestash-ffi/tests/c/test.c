/* Exercises every function of the C ABI against a directory store.
 * Built and run (under valgrind) by crates/safestash-ffi/tests/c/run.sh.
 * Usage: test DIR (an empty, existing directory). Exits 0 when every check
 * passed; prints each failed check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safestash.h"

static int failures = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            failures++;                                                        \
        }                                                                      \
    } while (0)

/* A call that must succeed; prints the error when it does not. */
#define OK(call)                                                               \
    do {                                                                       \
        int32_t rc_ = (call);                                                  \
        CHECK(rc_ == SS_OK, "%d %s", rc_, err.message ? err.message : "");     \
        ss_error_free(&err);                                                   \
    } while (0)

/* A call that must fail with `want` and a message. */
#define FAILS(want, call)                                                      \
    do {                                                                       \
        int32_t rc_ = (call);                                                  \
        CHECK(rc_ == (want) && err.code == (want) && err.message != NULL,      \
              "want %d, got %d (%s)", (want), rc_,                             \
              err.message ? err.message : "no message");                      \
        ss_error_free(&err);                                                   \
    } while (0)

static SsError err;

static int bytes_eq(const SsBytes *b, const char *s) {
    return b->len == strlen(s) && memcmp(b->ptr, s, b->len) == 0;
}

static int contains(const SsBytes *b, const char *needle) {
    char *s = malloc(b->len + 1);
    memcpy(s, b->ptr, b->len);
    s[b->len] = 0;
    int found = strstr(s, needle) != NULL;
    free(s);
    return found;
}

/* A restore hook: copies the value into the buffer `user_data` points to,
 * or fails when the buffer's first byte is '!'. */
struct restored {
    char fail;
    char value[256];
    int calls;
};

static int32_t restore_hook(void *user_data, const uint8_t *value, size_t value_len,
                            const uint8_t *meta, size_t meta_len) {
    struct restored *r = user_data;
    (void)meta;
    r->calls++;
    if (meta_len == 0) return 2;
    if (r->fail == '!') return 1;
    if (value_len >= sizeof r->value) return 3;
    memcpy(r->value, value, value_len);
    r->value[value_len] = 0;
    return 0;
}

/* The first "generation" in a JSON object the library wrote (its members
 * are in name order, so the top-level one comes before any part's). */
static uint64_t generation_of(const SsBytes *b) {
    char *s = malloc(b->len + 1);
    memcpy(s, b->ptr, b->len);
    s[b->len] = 0;
    const char *g = strstr(s, "\"generation\":");
    uint64_t n = g ? strtoull(g + strlen("\"generation\":"), NULL, 10) : 0;
    free(s);
    return n;
}

static void flip_a_byte(const char *path) {
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL, "open %s", path);
    if (!f) return;
    fseek(f, -40, SEEK_END);
    int c = fgetc(f);
    fseek(f, -40, SEEK_END);
    fputc(c ^ 0x01, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    SsStore *store = NULL;
    SsBytes value = {0}, meta = {0}, out = {0};
    bool found = false, removed = false;

    /* Open. */
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_store_open(NULL, &store, &err));
    OK(ss_store_open(dir, &store, &err));
    CHECK(store != NULL, "store handle");

    /* Save and load: the bytes come back as given, with metadata. */
    const char *v = "{\"b\":1,\"a\":[true,null,\"x\"]}";
    OK(ss_save(store, "orders", (const uint8_t *)v, strlen(v), "rows", "job-1", &err));
    OK(ss_load(store, "orders", &found, &value, &meta, &err));
    CHECK(found && bytes_eq(&value, v), "value back byte for byte");
    CHECK(contains(&meta, "\"origin\":\"job-1\"") && contains(&meta, "\"kind\":\"rows\""),
          "meta has kind and origin");
    ss_bytes_free(&value);
    ss_bytes_free(&meta);
    CHECK(value.ptr == NULL && value.len == 0, "ss_bytes_free zeroes");
    ss_bytes_free(NULL);
    OK(ss_load(store, "absent", &found, &value, NULL, &err));
    CHECK(!found && value.ptr == NULL, "absent key: not found");

    /* Bad input: a clear error each, nothing written. */
    FAILS(SS_ERR_INVALID_KEY, ss_save(store, "../escape", (const uint8_t *)"1", 1, NULL, NULL, &err));
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_save(store, "k", (const uint8_t *)"{nope", 5, NULL, NULL, &err));
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_save(store, "k", NULL, 0, NULL, NULL, &err));
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_save(NULL, "k", (const uint8_t *)"1", 1, NULL, NULL, &err));
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_load(store, "k", NULL, &value, NULL, &err));
    OK(ss_load(store, "k", &found, &value, NULL, &err));
    CHECK(!found, "nothing written for bad input");
    /* NULL error object: the code still comes back. */
    CHECK(ss_save(store, "../x", (const uint8_t *)"1", 1, NULL, NULL, NULL) == SS_ERR_INVALID_KEY,
          "NULL err");

    /* List and verify. */
    OK(ss_list(store, &out, &err));
    CHECK(contains(&out, "\"key\":\"orders\""), "list names orders");
    ss_bytes_free(&out);
    OK(ss_verify(store, &out, &err));
    CHECK(contains(&out, "\"ok\":true"), "verify ok");
    ss_bytes_free(&out);

    /* Clear. */
    OK(ss_clear(store, "orders", &removed, &err));
    CHECK(removed, "clear removed");
    OK(ss_clear(store, "orders", &removed, &err));
    CHECK(!removed, "second clear removes nothing");

    /* Damage: a flipped byte is corrupt (with a reason), never absent. */
    OK(ss_save(store, "damaged", (const uint8_t *)"[1,2,3]", 7, NULL, NULL, &err));
    char path[4096];
    snprintf(path, sizeof path, "%s/damaged", dir);
    flip_a_byte(path);
    int32_t rc = ss_load(store, "damaged", &found, &value, NULL, &err);
    CHECK(rc == SS_ERR_CORRUPT && err.reason != NULL, "corrupt, got %d", rc);
    ss_error_free(&err);
    OK(ss_verify(store, &out, &err));
    CHECK(contains(&out, "\"ok\":false"), "verify reports the damage");
    ss_bytes_free(&out);
    OK(ss_quarantine(store, "damaged", &found, &out, &err));
    CHECK(found && out.len > 0, "quarantined");
    ss_bytes_free(&out);
    OK(ss_quarantine(store, "damaged", &found, &out, &err));
    CHECK(!found, "nothing left to quarantine");

    /* Guard: begin, commit, a second commit is refused. */
    SsGuard *guard = NULL;
    OK(ss_begin(store, "table", (const uint8_t *)"[\"r1\"]", 6, NULL, NULL, &guard, &err));
    FAILS(SS_ERR_STASH_EXISTS,
          ss_begin(store, "table", (const uint8_t *)"[]", 2, NULL, NULL, &(SsGuard *){NULL}, &err));
    OK(ss_guard_info(guard, &out, &err));
    CHECK(contains(&out, "\"key\":\"table\""), "guard info");
    ss_bytes_free(&out);
    OK(ss_guard_commit(guard, &removed, &err));
    CHECK(removed, "commit cleared the stash");
    FAILS(SS_ERR_GUARD_DONE, ss_guard_commit(guard, &removed, &err));
    FAILS(SS_ERR_GUARD_DONE, ss_guard_keep(guard, &err));
    ss_guard_free(guard);

    /* Rollback: NULL hook refused; failing hook keeps the stash; then ok. */
    struct restored r = {0};
    OK(ss_begin(store, "table", (const uint8_t *)"[\"r1\"]", 6, "rows", NULL, &guard, &err));
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_guard_rollback(guard, NULL, &r, &err));
    r.fail = '!';
    FAILS(SS_ERR_RESTORE, ss_guard_rollback(guard, restore_hook, &r, &err));
    OK(ss_load(store, "table", &found, &value, NULL, &err));
    CHECK(found, "a failed restore keeps the stash");
    ss_bytes_free(&value);
    r.fail = 0;
    OK(ss_guard_rollback(guard, restore_hook, &r, &err));
    CHECK(strcmp(r.value, "[\"r1\"]") == 0 && r.calls == 2, "restored %s", r.value);
    OK(ss_load(store, "table", &found, &value, NULL, &err));
    CHECK(!found, "a successful restore clears the stash");
    FAILS(SS_ERR_GUARD_DONE, ss_guard_rollback(guard, restore_hook, &r, &err));
    ss_guard_free(guard);

    /* Keep: the stash stays. Free an open guard: the stash stays too. */
    OK(ss_begin(store, "kept", (const uint8_t *)"1", 1, NULL, NULL, &guard, &err));
    OK(ss_guard_keep(guard, &err));
    ss_guard_free(guard);
    ss_guard_free(NULL);

    /* Resume: the four outcomes. */
    int32_t outcome = -1;
    guard = NULL;
    OK(ss_resume(store, "job", NULL, 0, NULL, "run-1", -1, "run-1", &outcome, &guard, &out, &err));
    CHECK(outcome == SS_RESUME_NOTHING && guard == NULL, "nothing: %d", outcome);
    ss_bytes_free(&out);
    OK(ss_resume(store, "job", (const uint8_t *)"{\"live\":1}", 10, NULL, "run-1", -1, "run-1",
                 &outcome, &guard, &out, &err));
    CHECK(outcome == SS_RESUME_LIVE && guard != NULL && contains(&out, "\"replaced\":null"),
          "live: %d", outcome);
    ss_bytes_free(&out);
    OK(ss_guard_keep(guard, &err)); /* the run crashes after destroying */
    ss_guard_free(guard);
    guard = NULL;
    OK(ss_resume(store, "job", NULL, 0, NULL, "run-1", 3600000, "run-2", &outcome, &guard, &out,
                 &err));
    CHECK(outcome == SS_RESUME_REFUSED && guard == NULL && contains(&out, "\"verdict\":\"foreign\""),
          "refused: %d", outcome);
    ss_bytes_free(&out);
    OK(ss_resume(store, "job", NULL, 0, NULL, "run-1", 3600000, "run-1", &outcome, &guard, NULL,
                 &err));
    CHECK(outcome == SS_RESUME_STASH && guard != NULL, "stash: %d", outcome);
    memset(&r, 0, sizeof r);
    OK(ss_guard_rollback(guard, restore_hook, &r, &err));
    CHECK(strcmp(r.value, "{\"live\":1}") == 0, "resumed stash restored: %s", r.value);
    ss_guard_free(guard);

    /* Locks: a held key cannot be locked again within a timeout. */
    SsLock *lock = NULL, *other = NULL;
    OK(ss_lock(store, "locked", -1, &lock, &err));
    FAILS(SS_ERR_LOCKED, ss_lock(store, "locked", 0, &other, &err));
    FAILS(SS_ERR_LOCKED, ss_lock(store, "locked", 30, &other, &err));
    CHECK(other == NULL, "no handle on failure");
    OK(ss_lock_save(lock, (const uint8_t *)"\"under lock\"", 12, "k", "o", &err));
    OK(ss_load(store, "locked", &found, &value, NULL, &err));
    CHECK(found && bytes_eq(&value, "\"under lock\""), "saved under the lock");
    ss_bytes_free(&value);
    OK(ss_lock_clear(lock, &removed, &err));
    CHECK(removed, "cleared under the lock");
    ss_lock_free(lock);
    OK(ss_lock(store, "locked", 0, &lock, &err));
    ss_lock_free(lock);
    ss_lock_free(NULL);

    /* Journal: create, update with a generation, conflicts, view, rollback. */
    SsOperation *op = NULL, *again = NULL;
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_op_create(store, "deploy", "not json", &op, &err));
    OK(ss_op_create(store, "deploy", "[\"a\",\"b\"]", &op, &err));
    FAILS(SS_ERR_ALREADY_EXISTS, ss_op_create(store, "deploy", "[\"a\"]", &again, &err));
    FAILS(SS_ERR_NOT_FOUND, ss_op_open(store, "nope", &again, &err));
    OK(ss_op_open(store, "deploy", &again, &err));
    OK(ss_op_view(again, &out, &err));
    CHECK(contains(&out, "\"aggregate\":\"pending\"") && contains(&out, "\"generation\":"),
          "view");
    uint64_t g = generation_of(&out);
    ss_bytes_free(&out);
    OK(ss_op_update(op, "a", SS_EXPECT_OPERATION, g, "running", "started", &out, &err));
    CHECK(contains(&out, "\"aggregate\":\"running\"") && contains(&out, "\"note\":\"started\""),
          "running");
    uint64_t g2 = generation_of(&out);
    CHECK(g2 > g, "the generation moves on");
    ss_bytes_free(&out);
    /* A stale generation, of the operation or of the part: a conflict. */
    FAILS(SS_ERR_CONFLICT, ss_op_update(op, "a", SS_EXPECT_OPERATION, g, "completed", NULL, NULL, &err));
    FAILS(SS_ERR_CONFLICT, ss_op_update(op, "a", SS_EXPECT_PART, 0, "completed", NULL, NULL, &err));
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_op_update(op, "a", 7, g2, "completed", NULL, NULL, &err));
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_op_update(op, "a", SS_EXPECT_OPERATION, g2, "bogus", NULL, NULL, &err));
    OK(ss_op_stash(op, "a", SS_EXPECT_OPERATION, g2, (const uint8_t *)"{\"a\":\"before\"}", 14, &out, &err));
    g = generation_of(&out);
    ss_bytes_free(&out);
    OK(ss_op_update(op, "a", SS_EXPECT_OPERATION, g, "failed_retryable", NULL, &out, &err));
    CHECK(contains(&out, "\"terminal\":false"), "not terminal with a retryable part");
    ss_bytes_free(&out);
    memset(&r, 0, sizeof r);
    FAILS(SS_ERR_INVALID_ARGUMENT, ss_op_rollback(op, NULL, &r, &out, &err));
    OK(ss_op_rollback(again, restore_hook, &r, &out, &err));
    CHECK(strcmp(r.value, "{\"a\":\"before\"}") == 0, "part restored: %s", r.value);
    CHECK(contains(&out, "\"outcome\":\"restored\"") && contains(&out, "\"terminal\":true"),
          "rollback report");
    ss_bytes_free(&out);
    ss_op_free(op);
    ss_op_free(again);
    ss_op_free(NULL);

    ss_store_free(store);
    ss_store_free(NULL);
    ss_error_free(NULL);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("C ABI: every check passed\n");
    return 0;
}
