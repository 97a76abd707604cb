#!/usr/bin/env bash
# Run the image's ENTRYPOINT the way Apptainer runs a .sif on a cluster: root file system read-only,
# an unprivileged user (uid:gid 1000:1000 unless RUN_AS=UID:GID), a fresh tmpfs on /tmp, only the
# named bind mounts writable (or not, with :ro), and no network (a new, empty network namespace).
#
# usage: container/run-readonly.sh IMAGE [-v HOST:CTR[:ro]]... -- ARGS...
#
# Needs root, buildah, unshare and chroot (util-linux, coreutils). podman run would be the usual tool,
# but in some sandboxes (this project's CI machines) its OCI runtime may not set rlimits; this script
# uses only mount namespaces, bind mounts and chroot, which work there.
set -euo pipefail
image=${1:?image}; shift
mounts=()
while (($#)); do
  case $1 in
    -v) mounts+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
user=${RUN_AS:-1000:1000}
ctr=$(buildah from "$image")
trap 'buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")
mapfile -t env < <(buildah inspect --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$ctr" | sed '/^$/d')
mapfile -t entry < <(buildah inspect --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$ctr" | sed '/^$/d')
workdir=$(buildah inspect --format '{{.OCIv1.Config.WorkingDir}}' "$ctr")
# mount points are made in the container's own (throw-away) layer, never in the image
binds=""
for m in "${mounts[@]}"; do
  IFS=: read -r host target mode <<<"$m"
  mkdir -p "$root$target"
  binds+="mount --bind '$host' '$root$target'; "
  [[ ${mode:-} == ro ]] && binds+="mount -o remount,bind,ro '$root$target'; "
done
printf -v cmd '%q ' "${entry[@]}" "$@"
printf -v envs '%q ' "${env[@]}"
unshare --mount --net --fork sh -ec "
  mount --make-rprivate /
  mount --bind '$root' '$root'; mount -o remount,bind,ro '$root'
  mount -t tmpfs -o mode=1777 tmpfs '$root/tmp'
  mount -t proc proc '$root/proc'
  mount --rbind /dev '$root/dev'
  $binds
  exec chroot --userspec='$user' '$root' /usr/bin/env -i $envs sh -c 'cd ${workdir:-/} && exec $cmd'
"
