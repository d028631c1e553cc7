# A program linking dev-libs/libgreet, rebuilt when the library's subslot changes, with a USE
# flag that changes what it prints.
EAPI=8

DESCRIPTION="Prints a greeting line through libgreet"
SRC_URI="https://distfiles.example.invalid/${P}.tar.gz"

LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64 arm64 riscv"
IUSE="shout"

DEPEND="dev-libs/libgreet:="
RDEPEND="${DEPEND}"

src_compile() {
	emake CC="${CC:-${CHOST}-gcc}" CFLAGS="${CFLAGS}" LDFLAGS="${LDFLAGS}" \
		CPPFLAGS="${CPPFLAGS} $(usex shout -DSHOUT=1 '')"
}
