/* greet PREFIX WORDS...: prints "PREFIX: WORDS" through libgreet, in capitals when built with
 * USE=shout. */
#include <stdio.h>

#include <greet.h>

#ifndef SHOUT
#define SHOUT 0
#endif

int main(int argc, char *argv[])
{
	if (argc < 2) {
		fputs("usage: greet PREFIX [WORDS...]\n", stderr);
		return 2;
	}
	return greet_line(argv[1], argc - 2, argv + 2, SHOUT) == 0 ? 0 : 1;
}
