# The example repository's plain C program, with no dependencies.
EAPI=8

DESCRIPTION="Says hello from a program Portage built"
SRC_URI="https://distfiles.example.invalid/${P}.tar.gz"

LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64 arm64 riscv"

src_compile() {
	emake CC="${CC:-${CHOST}-gcc}" CFLAGS="${CFLAGS}" LDFLAGS="${LDFLAGS}"
}
