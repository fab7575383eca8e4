/*
 * fuzz_channel_lists.c - libFuzzer harness for the channel source lists and classifier
 * (src/channel.c, channel.h).
 *
 * The first input byte picks the list; the rest is a list file, fed to channel_lists_add.
 * Then some fixed sources are classified against the result, and so are the input's first
 * three lines taken as source, medium and campaign, so the hand-written matchers see
 * arbitrary bytes too. Beyond ASan/UBSan it checks: the result codes and channels are in
 * range, an error always comes with a message, a list never passes its bound, and a
 * one-line input that loaded cleanly is found in its own list.
 */
#include "clickd/channel.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_channel(enum channel c)
{
	if ((unsigned)c >= CHANNEL__COUNT || channel_name(c) == NULL)
		abort();
}

/* True when text could only be read as one plain entry: one line, nothing the format
 * treats specially (blanks, '#', '%', a leading byte-order mark), no byte the loader
 * refuses before decoding. */
static int plain_entry(const char *text, size_t len)
{
	if (len == 0 || len > CHANNEL_ENTRY_MAX_BYTES)
		return 0;
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if (c <= 0x20 || c == 0x7f || c == '#' || c == '%')
			return 0;
	}
	return 1;
}

static void classify_fixed(const struct channel_lists *l)
{
	static const char *const sources[] = {
	    "google", "www.facebook.com", "l.facebook.com", "(direct)", "youtube", "amazon", "",
	    "m."};
	static const char *const media[] = {"cpc", "organic", "referral", "(none)", ""};

	for (size_t s = 0; s < sizeof(sources) / sizeof(sources[0]); s++)
		for (size_t m = 0; m < sizeof(media) / sizeof(media[0]); m++)
			check_channel(channel_classify(l, sources[s], strlen(sources[s]), media[m],
			                               strlen(media[m]), "shop", 4, NULL, 0));
}

/* The input's first four lines as source, medium, campaign, affiliate ID (absent when
 * missing). */
static void classify_lines(const struct channel_lists *l, const char *text, size_t len)
{
	const char *field[4] = {NULL, NULL, NULL, NULL};
	size_t field_len[4] = {0, 0, 0, 0};
	size_t pos = 0;

	for (int f = 0; f < 4 && pos < len; f++) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;

		field[f] = text + pos;
		field_len[f] = n;
		pos += n + 1;
	}
	check_channel(channel_classify(l, field[0], field_len[0], field[1], field_len[1], field[2],
	                               field_len[2], field[3], field_len[3]));
	for (int w = 0; w < CHANNEL_LIST__COUNT; w++)
		(void)channel_lists_contains(l, (enum channel_list)w, field[0], field_len[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct channel_lists *l;
	enum channel_list which;
	const char *text;
	char err[256];
	int rc;

	if (size < 1)
		return 0;
	which = (enum channel_list)(data[0] % CHANNEL_LIST__COUNT);
	text = (const char *)data + 1;
	size--;

	l = channel_lists_new_empty();
	if (!l)
		return 0;
	err[0] = '\0';
	rc = channel_lists_add(l, which, text, size, "fuzz.txt", err, sizeof(err));
	if (rc != 0 && rc != -EINVAL && rc != -E2BIG && rc != -ENOMEM)
		abort();
	if (rc != 0 && (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL))
		abort();
	if (channel_lists_count(l, which) > CHANNEL_LIST_MAX_ENTRIES)
		abort();
	if (rc == 0 && plain_entry(text, size) && !channel_lists_contains(l, which, text, size))
		abort();

	classify_fixed(l);
	classify_lines(l, text, size);
	channel_lists_free(l);
	return 0;
}
