// Package integration holds SnowFlock's end-to-end tests: real sfld and
// sfctl binaries, a real guest (contrib/guest) under QEMU TCG, a real
// static pool. The test bed — binaries, CA, sfld, one booted parent VM — is
// set up once in TestMain and shared by the tests.
package integration
