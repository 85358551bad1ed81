# Sourced by reads_callgrind.sh and runtime_callgrind.sh (needs BIN, DIR, name): callgrind's
# count of `status --json`, `status` and `check` on $DIR/$name.toml, per thread.
for args in "status --json" "status" "check"; do
  tag=${args// /}
  rm -f $DIR/cg.$tag.out*
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=$DIR/cg.$tag.out \
    $BIN --config $DIR/$name.toml $args > $DIR/out.$tag 2> $DIR/cg.$tag.err
  echo "$args: $(cat $DIR/cg.$tag.out-* | grep -h '^totals:' | awk '{t += $2; s = s sep int($2 / 1000000); sep = " + "} END {printf "%d M instructions (threads: %s M)", t / 1000000, s}')"
done
