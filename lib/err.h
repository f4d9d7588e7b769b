/* Error codes: functions return 0 or a negative FG_E* code; fg_strerror() names it. */
#ifndef LIB_ERR_H
#define LIB_ERR_H

enum {
	FG_OK = 0,
	FG_EINVAL = 1,    /* bad argument or malformed input */
	FG_ENOMEM = 2,    /* reserved: allocation aborts instead */
	FG_ETOOBIG = 3,   /* a configured limit was exceeded */
	FG_ENOTFOUND = 4, /* a lookup found nothing (where NULL cannot say it) */
	FG_EEXIST = 5,    /* already present */
	FG_EIO = 6,       /* a system call failed; see errno in the log */
	FG_ESTORE = 7,    /* the store (LMDB) failed */
	FG_EPARSE = 8,    /* input could not be parsed */
	FG_EUNSUPPORTED = 9,
	FG_ECLOSED = 10, /* the peer or queue is closed */
	FG_EFULL = 11,   /* a queue or store is full */
	FG_ETIMEDOUT = 12,
	FG_ECONFIG = 13, /* bad configuration */
	FG_E_MAX
};

/* Borrowed static string for a code given positive or negative. */
const char *fg_strerror(int code);

#endif
