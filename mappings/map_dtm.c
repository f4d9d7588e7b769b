/* HL7 v2 dates and times (DTM, DT, TM, TS.1) to FHIR date, dateTime, instant and time. */
#include "config.h"

#include <string.h>

#include "lib/err.h"
#include "mappings/map.h"

/* A parsed value; n counts the digit pairs after the year that were present. */
typedef struct {
	int year, mon, day, hour, min, sec;
	char frac[5]; /* 0-4 digits, NUL-terminated */
	int parts;    /* 0 year, 1 +month, 2 +day, 3 +hour, 4 +minute, 5 +second */
	bool has_tz;
	int tz; /* minutes east of UTC */
} map_dtm_t;

static int
map_dtm_digits(const char **p, const char *end, int n, int *out)
{
	int v = 0;

	if (end - *p < n)
		return -1;
	for (int i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

static bool
map_dtm_is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
map_dtm_days(int y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return m == 2 && map_dtm_is_leap(y) ? 29 : days[m - 1];
}

/* Fractional seconds and the offset, common to DTM and TM. */
static int
map_dtm_tail(const char *p, const char *end, map_dtm_t *d)
{
	int hh, mm;

	if (p < end && *p == '.') {
		size_t n = 0;

		if (d->parts != 5)
			return -1;
		p++;
		while (p < end && *p >= '0' && *p <= '9' && n < 4)
			d->frac[n++] = *p++;
		if (n == 0)
			return -1;
		d->frac[n] = '\0';
	}
	if (p < end && (*p == '+' || *p == '-')) {
		int sign = *p == '-' ? -1 : 1;

		p++;
		if (map_dtm_digits(&p, end, 2, &hh) != 0 || map_dtm_digits(&p, end, 2, &mm) != 0)
			return -1;
		if (hh > 14 || mm > 59 || (hh == 14 && mm != 0))
			return -1;
		d->has_tz = true;
		d->tz = sign * (hh * 60 + mm);
	}
	return p == end ? 0 : -1;
}

static int
map_dtm_parse(slice_t v, map_dtm_t *d)
{
	const char *p = v.ptr, *end = v.ptr + v.len;
	int *fields[] = {&d->mon, &d->day, &d->hour, &d->min, &d->sec};

	memset(d, 0, sizeof(*d));
	d->mon = d->day = 1;
	if (map_dtm_digits(&p, end, 4, &d->year) != 0 || d->year == 0)
		return -1;
	for (int i = 0; i < 5 && p < end && *p >= '0' && *p <= '9'; i++) {
		if (map_dtm_digits(&p, end, 2, fields[i]) != 0)
			return -1;
		d->parts = i + 1;
	}
	if (d->mon < 1 || d->mon > 12 || d->day < 1 || d->day > map_dtm_days(d->year, d->mon))
		return -1;
	if (d->hour > 23 || d->min > 59 || d->sec > 59)
		return -1;
	return map_dtm_tail(p, end, d);
}

/* TM: HH[MM[SS[.S...]]][+/-ZZZZ]; the offset is checked but FHIR time has none. */
static int
map_dtm_parse_time(slice_t v, map_dtm_t *d)
{
	const char *p = v.ptr, *end = v.ptr + v.len;
	int *fields[] = {&d->hour, &d->min, &d->sec};

	memset(d, 0, sizeof(*d));
	for (int i = 0; i < 3 && p < end && *p >= '0' && *p <= '9'; i++) {
		if (map_dtm_digits(&p, end, 2, fields[i]) != 0)
			return -1;
		d->parts = i + 3;
	}
	if (d->parts < 3 || d->hour > 23 || d->min > 59 || d->sec > 59)
		return -1;
	return map_dtm_tail(p, end, d);
}

static slice_t
map_dtm_trim(slice_t v)
{
	v = slice_trim(v);
	/* TS is DTM^precision: the value is the first component whatever the delimiter. */
	for (size_t i = 0; i < v.len; i++)
		if (v.ptr[i] == '^') {
			v.len = i;
			break;
		}
	return v;
}

/* Appends v (not negative) with at least width digits, as "%0*d" would; returns the end. */
static char *
map_dtm_num(char *p, int v, int width)
{
	char tmp[12];
	int n = 0;

	if (width == 2 && v < 100) { /* months, days, hours, minutes, seconds, offsets */
		p[0] = (char)('0' + v / 10);
		p[1] = (char)('0' + v % 10);
		return p + 2;
	}
	if (width == 4 && v >= 1000 && v < 10000) { /* years */
		p[0] = (char)('0' + v / 1000);
		p[1] = (char)('0' + v / 100 % 10);
		p[2] = (char)('0' + v / 10 % 10);
		p[3] = (char)('0' + v % 10);
		return p + 4;
	}

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0 && n < (int)sizeof(tmp));
	while (n < width)
		tmp[n++] = '0';
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* "YYYY", "YYYY-MM" or "YYYY-MM-DD" (parts 0, 1, 2 or more); returns the end. */
static char *
map_dtm_put_date(char *p, const map_dtm_t *d, int parts)
{
	p = map_dtm_num(p, d->year, 4);
	if (parts >= 1) {
		*p++ = '-';
		p = map_dtm_num(p, d->mon, 2);
	}
	if (parts >= 2) {
		*p++ = '-';
		p = map_dtm_num(p, d->day, 2);
	}
	*p = '\0';
	return p;
}

/* "hh:mm:ss" and ".ffff" when there are fractions; returns the end. */
static char *
map_dtm_put_time(char *p, const map_dtm_t *d)
{
	size_t flen = strlen(d->frac);

	p = map_dtm_num(p, d->hour, 2);
	*p++ = ':';
	p = map_dtm_num(p, d->min, 2);
	*p++ = ':';
	p = map_dtm_num(p, d->sec, 2);
	if (flen > 0) {
		*p++ = '.';
		memcpy(p, d->frac, flen);
		p += flen;
	}
	*p = '\0';
	return p;
}

int
map_dtm_format(slice_t v, map_dtm_kind_t kind, const map_options_t *opt, char *out, unsigned *flags)
{
	map_dtm_t d;
	int tz, atz;
	char *p;

	*flags = 0;
	out[0] = '\0';
	v = map_dtm_trim(v);
	if (kind == MAP_DTM_TIME) {
		if (map_dtm_parse_time(v, &d) != 0)
			return -FG_EINVAL;
		map_dtm_put_time(out, &d);
		return 0;
	}
	if (map_dtm_parse(v, &d) != 0)
		return -FG_EINVAL;
	if (kind == MAP_DTM_INSTANT && d.parts < 3)
		return -FG_EINVAL;
	if (kind == MAP_DTM_DATE || d.parts < 3) {
		map_dtm_put_date(out, &d, d.parts);
		return 0;
	}
	if (d.has_tz) {
		tz = d.tz;
	} else if (opt != NULL && opt->tz_set) {
		tz = opt->tz_minutes;
	} else if (kind == MAP_DTM_INSTANT) {
		/* a system timestamp (MSH-7, EVN-2) must be exact: UTC, and say so */
		*flags = MAP_DTM_UTC_ASSUMED;
		tz = 0;
	} else {
		/* a clinical time is never shifted: keep what is certain */
		*flags = MAP_DTM_TIME_DROPPED;
		map_dtm_put_date(out, &d, 2);
		return 0;
	}
	/* at most 10 + 1 + 13 + 1 + 8 (any int offset) + 3 + NUL bytes: within MAP_DTM_MAX */
	atz = tz < 0 ? -tz : tz;
	p = map_dtm_put_date(out, &d, 2);
	*p++ = 'T';
	p = map_dtm_put_time(p, &d);
	*p++ = tz < 0 ? '-' : '+';
	p = map_dtm_num(p, atz / 60, 2);
	*p++ = ':';
	p = map_dtm_num(p, atz % 60, 2);
	*p = '\0';
	return 0;
}
