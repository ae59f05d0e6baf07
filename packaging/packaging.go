// Package packaging makes porttrace's release files: release.sh (`make
// release`) builds the binary for each architecture and packs it as a
// tar.gz, a .deb and an .rpm (nfpm.yaml), with SHA256SUMS over them;
// pkgversion.sh turns git describe into a deb and rpm version. It has no
// code of its own: its tests check what release.sh makes and install it.
package packaging
