#!/usr/bin/env bash
# Prints what sandboxes leave on a host if torn down badly: sandbar's mounts,
# network namespaces, veths, nftables tables and cgroups. Two runs that print
# the same text mean nothing leaked in between.
set -u
echo "mounts:";   grep -E 'sandbar' /proc/mounts | awk '{print $2}' | sort
echo "netns:";    find /run/sandbar -path '*/netns/*' 2>/dev/null | sort
echo "veths:";    ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | sort
echo "nft:";      nft list tables 2>/dev/null | grep -i sandbar | sort
echo "cgroups:";  find /sys/fs/cgroup -maxdepth 3 -type d -name 'sandbar*' 2>/dev/null | sort
echo "processes:"; pgrep -x 'envd|sandbar' 2>/dev/null | wc -l
exit 0
