#!/usr/bin/env bash
# Names the commit that a device machine runs. The device's copy of the tree carries a .git that can be older
# than the tree itself, so the commit is stamped here and checked there:
#
#   here, before the device call:   bench/commit_stamp.sh write     (writes .bench-commit, git-ignored; carry it)
#   there (the GPU scripts do it):  export NXCODEC_COMMIT=$(bench/commit_stamp.sh read)
#
# "write" records HEAD (with +dirty if the code has uncommitted changes) and the hash of the working tree's
# files (bench/results left out). "read", where the local .git does not know that commit, prints it when the
# tree it runs in hashes the same and the commit with +dirty when not; otherwise (no stamp, or a .git that knows
# the commit) nothing, and git_commit() asks git.
set -euo pipefail
cd "$(dirname "$0")/.."
tree_hash() {
  local idx
  idx=$(mktemp -u)
  GIT_INDEX_FILE=$idx git add -A -- . ':(exclude)bench/results' 2>/dev/null
  GIT_INDEX_FILE=$idx git write-tree
  rm -f "$idx"
}
case "${1:-}" in
  write)
    commit=$(git rev-parse --short HEAD)
    [ -z "$(git status --porcelain -- . ':(exclude)bench/results')" ] || commit+="+dirty"  # untracked files too
    echo "$commit $(tree_hash)" >.bench-commit
    cat .bench-commit ;;
  read)
    [ -f .bench-commit ] || exit 0
    read -r commit tree <.bench-commit
    # where git knows the stamped commit, this .git is current enough for git_commit() to ask it
    git cat-file -e "${commit%+dirty}^{commit}" 2>/dev/null && exit 0
    if [ "$(tree_hash)" = "$tree" ]; then echo "$commit"; else echo "${commit%+dirty}+dirty"; fi ;;
  *) echo "usage: $0 write|read" >&2; exit 2 ;;
esac
