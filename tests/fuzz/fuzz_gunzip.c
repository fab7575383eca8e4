/*
 * fuzz_gunzip.c - libFuzzer harness for gunzip_body (src/gunzip.c): any bytes, with the
 * bounds taken from the input. It aborts when an answer breaks the contract: a success
 * whose output passes a bound or is not NUL-terminated, a failure with output or without
 * a reason, or a code gunzip.h does not list.
 */
#include "clickd/gunzip.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t max_out, len = 0;
	unsigned ratio;
	char *out = NULL, err[160] = "";
	int rc;

	if (size < 2)
		return 0;
	max_out = (size_t)1024 << (data[0] % 11); /* 1 KiB .. 1 MiB */
	ratio = data[1] % 4 == 0 ? 0 : 1u + data[1] % 200;
	rc = gunzip_body(data + 2, size - 2, max_out, ratio, &out, &len, err, sizeof(err));
	CHECK(rc == 0 || rc == -EMSGSIZE || rc == -E2BIG || rc == -EBADMSG || rc == -ENOMEM);
	if (rc == 0) {
		CHECK(out != NULL);
		CHECK(len <= max_out);
		CHECK(ratio == 0 || len <= (size - 2) * ratio);
		CHECK(out[len] == '\0');
		free(out);
	} else {
		CHECK(out == NULL);
		CHECK(err[0] != '\0');
	}
	return 0;
}
