/*
 * text.c - UTF-8 and control characters in client strings (see text.h).
 *
 * One step function reads the next unit of a string: a character (valid UTF-8, RFC 3629
 * table: no overlongs, no surrogates, nothing past U+10FFFF), a control character, or a
 * maximal ill-formed subsequence — the longest start of what could have been a valid
 * sequence (a lead byte and the continuation bytes it allows), or one byte that cannot
 * start one. Checking and repairing walk the same units, so the length text_check
 * announces is what text_repair writes.
 */
#include "clickd/text.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

const struct text_rules text_repair_all = {.replace_invalid_utf8 = true, .replace_controls = true};

enum unit_kind { UNIT_CHAR, UNIT_CONTROL, UNIT_INVALID };

/* The unit at s[0] (n >= 1 bytes left); its length in *unit_len. */
static enum unit_kind next_unit(const unsigned char *s, size_t n, size_t *unit_len)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
	size_t need;

	*unit_len = 1;
	if (c < 0x80)
		return c < 0x20 || c == 0x7F ? UNIT_CONTROL : UNIT_CHAR;
	if (c >= 0xC2 && c <= 0xDF) {
		need = 1;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		if (c == 0xE0)
			lo = 0xA0; /* overlong below */
		else if (c == 0xED)
			hi = 0x9F; /* surrogates above */
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		if (c == 0xF0)
			lo = 0x90; /* overlong below */
		else if (c == 0xF4)
			hi = 0x8F; /* past U+10FFFF above */
	} else {
		return UNIT_INVALID; /* a continuation byte, C0/C1 (overlong), F5..FF */
	}
	/* The second byte has the lead's own range, the others 80..BF; the subsequence
	 * ends at the first byte that does not fit. */
	for (size_t k = 1; k <= need; k++) {
		unsigned char b = k < n ? s[k] : 0;
		bool fits = k < n && (k == 1 ? b >= lo && b <= hi : b >= 0x80 && b <= 0xBF);

		if (!fits) {
			*unit_len = k;
			return UNIT_INVALID;
		}
	}
	*unit_len = need + 1;
	/* C1 controls: U+0080..U+009F, encoded C2 80..C2 9F. */
	return c == 0xC2 && s[1] <= 0x9F ? UNIT_CONTROL : UNIT_CHAR;
}

/* Whether the rules replace a unit of this kind (a clean character: never). */
static bool replaced(enum unit_kind kind, const struct text_rules *rules)
{
	return (kind == UNIT_INVALID && rules->replace_invalid_utf8) ||
	       (kind == UNIT_CONTROL && rules->replace_controls);
}

/*
 * True when each of the 8 bytes of w is printable ASCII (0x20..0x7E), the text of nearly
 * every field: such runs skip the unit-by-unit walk (text_check runs on every field of
 * every beacon; bench/micro.c "decode"). SWAR as in record.c: (x - 0x01..) & ~x & 0x80..
 * marks a zero byte of x, so x = w ^ 0x7F.. finds DEL, (w - 0x20..) & ~w & 0x80.. finds
 * bytes below 0x20, and w & 0x80.. the bytes of 0x80 and up.
 */
static bool word_is_printable(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
	uint64_t d = w ^ (ones * 0x7F);

	return ((((w - ones * 0x20) & ~w) | ((d - ones) & ~d) | w) & high) == 0;
}

int text_check(const char *str, size_t len, const struct text_rules *rules, size_t *repaired_len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, out = 0, n;
	bool dirty = false;

	while (i < len) {
		enum unit_kind kind;
		uint64_t w;

		if (len - i >= 8) {
			memcpy(&w, s + i, 8);
			if (word_is_printable(w)) {
				i += 8;
				out += 8;
				continue;
			}
		}
		if (s[i] >= 0x20 && s[i] < 0x7F) {
			i++;
			out++;
			continue;
		}
		kind = next_unit(s + i, len - i, &n);

		if (kind == UNIT_CHAR) {
			out += n;
		} else if (replaced(kind, rules)) {
			out += TEXT_REPLACEMENT_LEN;
			dirty = true;
		} else {
			return kind == UNIT_INVALID ? -EILSEQ : -EBADMSG;
		}
		i += n;
	}
	if (!dirty)
		return 0;
	*repaired_len = out;
	return 1;
}

size_t text_repair(const char *str, size_t len, const struct text_rules *rules, char *out,
                   size_t cap)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, w = 0, n;

	while (i < len) {
		enum unit_kind kind = next_unit(s + i, len - i, &n);
		bool repl = replaced(kind, rules);
		size_t out_n = repl ? TEXT_REPLACEMENT_LEN : n;

		if (out_n > cap - w)
			break;
		memcpy(out + w, repl ? TEXT_REPLACEMENT : str + i, out_n);
		w += out_n;
		i += n;
	}
	return w;
}

size_t text_cut(const char *str, size_t len, size_t max)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, n;

	if (len <= max)
		return len;
	while (i < max) {
		next_unit(s + i, len - i, &n);
		if (n > max - i)
			break;
		i += n;
	}
	return i;
}

bool text_has_control(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, n;

	while (i < len) {
		if (next_unit(s + i, len - i, &n) == UNIT_CONTROL)
			return true;
		i += n;
	}
	return false;
}
