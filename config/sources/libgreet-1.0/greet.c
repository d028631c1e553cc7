#include <ctype.h>
#include <stdio.h>

#include "greet.h"

static int put_word(const char *word, int shout)
{
	for (; *word; word++)
		if (putchar(shout ? toupper((unsigned char)*word) : *word) == EOF)
			return -1;
	return 0;
}

int greet_line(const char *prefix, int argc, char *const argv[], int shout)
{
	if (put_word(prefix, shout) < 0 || fputs(":", stdout) == EOF)
		return -1;
	for (int i = 0; i < argc; i++)
		if (putchar(' ') == EOF || put_word(argv[i], shout) < 0)
			return -1;
	return putchar('\n') == EOF || fflush(stdout) == EOF ? -1 : 0;
}
