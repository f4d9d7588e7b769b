/* Names of fhirgate error codes. */
#include "config.h"

#include "lib/err.h"

#include <stddef.h>

const char *
fg_strerror(int code)
{
	static const char *const names[FG_E_MAX] = {
	    [FG_OK] = "success",
	    [FG_EINVAL] = "invalid argument or input",
	    [FG_ENOMEM] = "out of memory",
	    [FG_ETOOBIG] = "limit exceeded",
	    [FG_ENOTFOUND] = "not found",
	    [FG_EEXIST] = "already exists",
	    [FG_EIO] = "input/output error",
	    [FG_ESTORE] = "store error",
	    [FG_EPARSE] = "parse error",
	    [FG_EUNSUPPORTED] = "not supported",
	    [FG_ECLOSED] = "closed",
	    [FG_EFULL] = "full",
	    [FG_ETIMEDOUT] = "timed out",
	    [FG_ECONFIG] = "configuration error",
	};

	if (code < 0)
		code = -code;
	if (code >= FG_E_MAX || names[code] == NULL)
		return "unknown error";
	return names[code];
}
