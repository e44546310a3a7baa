#!/bin/sh
# The container image's build steps, in one place: deploy/image/Dockerfile runs this in
# its build stage, and CI (which has no container daemon) runs it too, so the commands
# that make the image are exercised on every change.
#
#   deploy/image/build.sh OUT     lays out the image's files under OUT:
#     OUT/usr/local/bin/salve         the binary, built with the locked dependencies
#     OUT/etc/salve/policies/         the shipped rules and guardrails (a default; in a
#                                     cluster a ConfigMap is mounted over it)
#     OUT/var/lib/salve/              the SQLite volume's mount point, owned by 65532
# and then runs what the image will run: `salve --version` and the shipped policy tests.
#
# SALVE_BUILD_PROFILE picks Cargo's profile (default: release).
set -eu
out=${1:?usage: deploy/image/build.sh OUTPUT_DIR}
profile=${SALVE_BUILD_PROFILE:-release}
cd "$(dirname "$0")/../.."

cargo build --locked --profile "$profile" --bin salve
case "$profile" in
  dev) built=target/debug/salve ;;
  *) built="target/$profile/salve" ;;
esac

mkdir -p "$out/usr/local/bin" "$out/etc/salve" "$out/var/lib/salve"
install -m 0755 "$built" "$out/usr/local/bin/salve"
rm -rf "$out/etc/salve/policies"
cp -R policies "$out/etc/salve/policies"
# Packaging files are not policy.
rm -f "$out/etc/salve/policies/Kustomization" "$out/etc/salve/policies/README.md"
# The non-root user of the runtime image (distroless's `nonroot`) owns the data volume's
# mount point; chown needs root, which the image build and CI have.
if [ "$(id -u)" = 0 ]; then chown 65532:65532 "$out/var/lib/salve"; fi

"$out/usr/local/bin/salve" --version
"$out/usr/local/bin/salve" policy test "$out/etc/salve/policies"
