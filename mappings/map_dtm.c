/* HL7 v2 dates and times (DTM, DT, TM, TS.1) to FHIR date, dateTime, instant and time. */
#include "config.h"

#include <stdio.h>
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

int
map_dtm_format(slice_t v, map_dtm_kind_t kind, const map_options_t *opt, char *out, unsigned *flags)
{
	map_dtm_t d;
	char frac[8] = "";
	int n, tz, atz;

	*flags = 0;
	out[0] = '\0';
	v = map_dtm_trim(v);
	if (kind == MAP_DTM_TIME) {
		if (map_dtm_parse_time(v, &d) != 0)
			return -FG_EINVAL;
		if (d.frac[0] != '\0')
			snprintf(frac, sizeof(frac), ".%s", d.frac);
		snprintf(out, MAP_DTM_MAX, "%02d:%02d:%02d%s", d.hour, d.min, d.sec, frac);
		return 0;
	}
	if (map_dtm_parse(v, &d) != 0)
		return -FG_EINVAL;
	if (kind == MAP_DTM_INSTANT && d.parts < 3)
		return -FG_EINVAL;
	if (kind == MAP_DTM_DATE || d.parts < 3) {
		if (d.parts == 0)
			snprintf(out, MAP_DTM_MAX, "%04d", d.year);
		else if (d.parts == 1)
			snprintf(out, MAP_DTM_MAX, "%04d-%02d", d.year, d.mon);
		else
			snprintf(out, MAP_DTM_MAX, "%04d-%02d-%02d", d.year, d.mon, d.day);
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
		snprintf(out, MAP_DTM_MAX, "%04d-%02d-%02d", d.year, d.mon, d.day);
		return 0;
	}
	if (d.frac[0] != '\0')
		snprintf(frac, sizeof(frac), ".%s", d.frac);
	atz = tz < 0 ? -tz : tz;
	n = snprintf(out, MAP_DTM_MAX, "%04d-%02d-%02dT%02d:%02d:%02d%s%c%02d:%02d", d.year, d.mon,
		     d.day, d.hour, d.min, d.sec, frac, tz < 0 ? '-' : '+', atz / 60, atz % 60);
	return n > 0 && n < MAP_DTM_MAX ? 0 : -FG_EINVAL;
}
