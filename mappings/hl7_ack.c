/* HL7 v2 acknowledgments: when the sender wants one, and an ACK that mirrors its MSH. */
#include "config.h"

#include <string.h>

#include "lib/err.h"
#include "lib/timeutil.h"
#include "mappings/hl7.h"

const char *
hl7_ack_code_name(hl7_ack_code_t code)
{
	static const char *const names[] = {"AA", "AE", "AR", "CA", "CE", "CR"};

	return (unsigned)code < sizeof(names) / sizeof(names[0]) ? names[code] : "AR";
}

static bool
hl7_ack_is_commit(hl7_ack_code_t code)
{
	return code == HL7_ACK_CA || code == HL7_ACK_CE || code == HL7_ACK_CR;
}

static bool
hl7_ack_is_error(hl7_ack_code_t code)
{
	return code != HL7_ACK_AA && code != HL7_ACK_CA;
}

bool
hl7_msg_is_enhanced(const hl7_msg_t *m)
{
	const hl7_header_t *h = hl7_msg_header(m);

	return h->accept_ack.len > 0 || h->app_ack.len > 0;
}

bool
hl7_ack_is_wanted(const hl7_msg_t *m, hl7_ack_code_t code)
{
	slice_t want;

	/* Without a readable MSH the sender cannot have said; tell it what went wrong. */
	if (m == NULL)
		return true;
	if (!hl7_msg_is_enhanced(m))
		return !hl7_ack_is_commit(code);
	want = hl7_ack_is_commit(code) ? hl7_msg_header(m)->accept_ack : hl7_msg_header(m)->app_ack;
	if (slice_eq_cstr(want, "NE"))
		return false;
	if (slice_eq_cstr(want, "ER"))
		return hl7_ack_is_error(code);
	if (slice_eq_cstr(want, "SU"))
		return !hl7_ack_is_error(code);
	return true; /* AL, empty, or a value we do not know */
}

/* Major, minor, patch of MSH-12.1 as one number (2.3.1 -> 20301); 2.5 when unreadable. */
static unsigned
hl7_ack_version(slice_t v)
{
	unsigned part[3] = {0, 0, 0}, n = 0;

	for (size_t i = 0; i < v.len && n < 3; i++) {
		if (v.ptr[i] == '.')
			n++;
		else if (v.ptr[i] >= '0' && v.ptr[i] <= '9' && part[n] < 100)
			part[n] = part[n] * 10 + (unsigned)(v.ptr[i] - '0');
		else
			break;
	}
	if (part[0] == 0 || part[1] > 99 || part[2] > 99)
		return 20500;
	return part[0] * 10000 + part[1] * 100 + part[2];
}

/* HL7 table 0357 texts for ERR-3 / ERR-1.4. */
static const char *
hl7_ack_err_name(int code)
{
	switch (code) {
	case HL7_ERR_OK:
		return "Message accepted";
	case HL7_ERR_SEGMENT_SEQUENCE:
		return "Segment sequence error";
	case HL7_ERR_REQUIRED_FIELD:
		return "Required field missing";
	case HL7_ERR_DATA_TYPE:
		return "Data type error";
	case HL7_ERR_TABLE_VALUE:
		return "Table value not found";
	case HL7_ERR_UNSUPPORTED_MSG_TYPE:
		return "Unsupported message type";
	case HL7_ERR_UNSUPPORTED_EVENT:
		return "Unsupported event code";
	case HL7_ERR_UNSUPPORTED_PROCESSING_ID:
		return "Unsupported processing id";
	case HL7_ERR_UNSUPPORTED_VERSION:
		return "Unsupported version id";
	default:
		return "Application internal error";
	}
}

/* Writes into the ACK with a sticky error. */
struct hl7_ack_writer {
	buf_t *out;
	hl7_delims_t d;
	int rc;
};

static void
hl7_ack_raw(struct hl7_ack_writer *w, slice_t s)
{
	if (w->rc == 0 && s.len > 0)
		w->rc = buf_append(w->out, s.ptr, s.len);
}

static void
hl7_ack_char(struct hl7_ack_writer *w, char c)
{
	if (w->rc == 0)
		w->rc = buf_append_byte(w->out, c);
}

static void
hl7_ack_uint(struct hl7_ack_writer *w, unsigned v)
{
	if (v != 0 && w->rc == 0)
		w->rc = buf_printf(w->out, "%u", v);
}

/* Text with the message's escape sequences, so that it cannot break the ACK's structure. */
static void
hl7_ack_text(struct hl7_ack_writer *w, slice_t s)
{
	static const char hex[] = "0123456789ABCDEF";
	const hl7_delims_t *d = &w->d;

	for (size_t i = 0; i < s.len && w->rc == 0; i++) {
		char c = s.ptr[i], e = 0;
		unsigned char u = (unsigned char)c;

		if (c == d->field)
			e = 'F';
		else if (c == d->component)
			e = 'S';
		else if (c == d->subcomponent)
			e = 'T';
		else if (c == d->repetition)
			e = 'R';
		else if (c == d->escape)
			e = 'E';
		else if (d->truncation != 0 && c == d->truncation)
			e = 'P';
		if (e != 0) {
			char esc[3] = {d->escape, e, d->escape};

			w->rc = buf_append(w->out, esc, 3);
		} else if (u < 0x20 || u == 0x7f) {
			char esc[5] = {d->escape, 'X', hex[u >> 4], hex[u & 15], d->escape};

			w->rc = buf_append(w->out, esc, 5);
		} else {
			hl7_ack_char(w, c);
		}
	}
}

/* ERR in the form of the message's version; fs is the field separator. */
static void
hl7_ack_err(struct hl7_ack_writer *w, const hl7_error_t *err, unsigned version)
{
	static const hl7_error_t internal = {.code = HL7_ERR_INTERNAL};
	const char fs = w->d.field, cs = w->d.component;
	unsigned pos[5];
	size_t npos = 0;

	if (err == NULL || err->code == 0)
		err = &internal;
	pos[0] = err->seg_seq;
	pos[1] = err->field;
	pos[2] = err->rep;
	pos[3] = err->comp;
	pos[4] = err->sub;
	hl7_ack_raw(w, SLICE_LIT("ERR"));
	hl7_ack_char(w, fs);
	if (version < 20500) {
		/* ERR-1 (ELD): segment ^ sequence ^ field ^ code&text&HL70357 */
		hl7_ack_text(w, slice_make(err->segment, strnlen(err->segment, 3)));
		hl7_ack_char(w, cs);
		hl7_ack_uint(w, err->seg_seq);
		hl7_ack_char(w, cs);
		hl7_ack_uint(w, err->field);
		hl7_ack_char(w, cs);
		hl7_ack_uint(w, (unsigned)err->code);
		hl7_ack_char(w, w->d.subcomponent);
		hl7_ack_text(w, slice_cstr(hl7_ack_err_name(err->code)));
		hl7_ack_char(w, w->d.subcomponent);
		hl7_ack_raw(w, SLICE_LIT("HL70357"));
		hl7_ack_char(w, '\r');
		return;
	}
	/* ERR-2 (ERL) without trailing empty components, ERR-3 (CWE), ERR-4, ERR-8. */
	hl7_ack_char(w, fs);
	if (err->segment[0] != '\0') {
		hl7_ack_text(w, slice_make(err->segment, strnlen(err->segment, 3)));
		for (npos = 5; npos > 0 && pos[npos - 1] == 0; npos--)
			;
		for (size_t i = 0; i < npos; i++) {
			hl7_ack_char(w, cs);
			hl7_ack_uint(w, pos[i]);
		}
	}
	hl7_ack_char(w, fs);
	hl7_ack_uint(w, (unsigned)err->code);
	hl7_ack_char(w, cs);
	hl7_ack_text(w, slice_cstr(hl7_ack_err_name(err->code)));
	hl7_ack_char(w, cs);
	hl7_ack_raw(w, SLICE_LIT("HL70357"));
	hl7_ack_char(w, fs);
	hl7_ack_char(w, 'E');
	if (err->text[0] != '\0') {
		for (int i = 0; i < 4; i++)
			hl7_ack_char(w, fs);
		hl7_ack_text(w, slice_make(err->text, strnlen(err->text, sizeof(err->text))));
	}
	hl7_ack_char(w, '\r');
}

int
hl7_ack_build(const hl7_msg_t *m, hl7_ack_code_t code, const hl7_error_t *err, const char *self_app,
	      const char *self_fac, slice_t control_id, uint64_t now_ns, buf_t *out)
{
	static const hl7_delims_t std = {'|', '^', '~', '\\', '&', 0};
	struct hl7_ack_writer w = {out, std, 0};
	const hl7_header_t *h = m != NULL ? hl7_msg_header(m) : NULL;
	const hl7_seg_t *msh = m != NULL ? hl7_msg_segment(m, 0) : NULL;
	slice_t app, fac, version = h != NULL ? h->version : SLICE_LIT("2.5");
	unsigned v = hl7_ack_version(version);
	char now[32];
	char fs;

	if (m != NULL)
		w.d = *hl7_msg_delims(m);
	fs = w.d.field;
	time_format_hl7(now_ns, now, sizeof(now));

	hl7_ack_raw(&w, SLICE_LIT("MSH"));
	hl7_ack_char(&w, fs);
	if (msh != NULL)
		hl7_ack_raw(&w, hl7_seg_field(msh, 2));
	else
		hl7_ack_raw(&w, SLICE_LIT("^~\\&"));
	hl7_ack_char(&w, fs);
	app = h != NULL ? h->receiving_app : SLICE_NULL;
	fac = h != NULL ? h->receiving_fac : SLICE_NULL;
	if (app.len > 0)
		hl7_ack_raw(&w, app); /* already in this delimiter set */
	else
		hl7_ack_text(&w, slice_cstr(self_app));
	hl7_ack_char(&w, fs);
	if (fac.len > 0)
		hl7_ack_raw(&w, fac);
	else
		hl7_ack_text(&w, slice_cstr(self_fac));
	hl7_ack_char(&w, fs);
	if (h != NULL) {
		hl7_ack_raw(&w, h->sending_app);
		hl7_ack_char(&w, fs);
		hl7_ack_raw(&w, h->sending_fac);
	} else {
		hl7_ack_char(&w, fs);
	}
	hl7_ack_char(&w, fs);
	hl7_ack_raw(&w, slice_cstr(now));
	hl7_ack_char(&w, fs);
	hl7_ack_char(&w, fs);
	/* MSH-9: the structure component exists from 2.3.1, the trigger from 2.2. */
	hl7_ack_raw(&w, SLICE_LIT("ACK"));
	if (v >= 20301) {
		hl7_ack_char(&w, w.d.component);
		hl7_ack_raw(&w, h != NULL ? h->trigger : SLICE_NULL);
		hl7_ack_char(&w, w.d.component);
		hl7_ack_raw(&w, SLICE_LIT("ACK"));
	} else if (v >= 20200 && h != NULL && h->trigger.len > 0) {
		hl7_ack_char(&w, w.d.component);
		hl7_ack_raw(&w, h->trigger);
	}
	hl7_ack_char(&w, fs);
	hl7_ack_text(&w, control_id);
	hl7_ack_char(&w, fs);
	hl7_ack_raw(&w, msh != NULL ? hl7_seg_field(msh, 11) : SLICE_LIT("P"));
	hl7_ack_char(&w, fs);
	hl7_ack_raw(&w, msh != NULL ? hl7_seg_field(msh, 12) : version);
	if (msh != NULL && hl7_seg_field(msh, 18).len > 0) {
		for (int i = 12; i < 18; i++)
			hl7_ack_char(&w, fs);
		hl7_ack_raw(&w, hl7_seg_field(msh, 18));
	}
	hl7_ack_char(&w, '\r');

	hl7_ack_raw(&w, SLICE_LIT("MSA"));
	hl7_ack_char(&w, fs);
	hl7_ack_raw(&w, slice_cstr(hl7_ack_code_name(code)));
	hl7_ack_char(&w, fs);
	if (h != NULL)
		hl7_ack_raw(&w, h->control_id);
	if (hl7_ack_is_error(code) && v < 20500 && err != NULL && err->text[0] != '\0') {
		hl7_ack_char(&w, fs);
		hl7_ack_text(&w, slice_make(err->text, strnlen(err->text, sizeof(err->text))));
	}
	hl7_ack_char(&w, '\r');
	if (hl7_ack_is_error(code))
		hl7_ack_err(&w, err, v);
	return w.rc;
}
