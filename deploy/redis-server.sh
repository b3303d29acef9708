#!/bin/sh
# Redis of docker-compose.yml with the password from its secret file. The password goes into
# a config file written by the shell's own printf (a builtin: no process, so no command line
# shows it), never onto redis-server's command line, where `ps` would show it to every user.
set -eu
umask 077
printf 'requirepass "%s"\nappendonly yes\ndir /data\n' "$(cat /run/secrets/redis_password)" > /tmp/redis.conf
exec redis-server /tmp/redis.conf
