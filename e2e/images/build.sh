#!/usr/bin/env bash
# Builds the e2e test images with no registry, FROM scratch, from binaries on
# this host:
#   edgecert-nginx:e2e    Debian's nginx binary and the libraries ldd lists
#   edgecert-pebble:e2e   pebble and pebble-challtestsrv (static) with Pebble's test TLS files
#   edgecert-testapp:e2e  a tiny HTTP app that carries edgecert labels
#   edgecert-apache:e2e   Debian's apache2 binary, the modules it loads, and their libraries
#   edgecert-haproxy:e2e  Debian's haproxy binary and its libraries, for the socket proxy
#                         (its configuration, compose/socket-proxy/haproxy.cfg, is mounted)
#   edgecert-bind:e2e     Debian's BIND 9 named and its libraries, an authoritative server
#                         for the DNS-01 tests (each test mounts its configuration and zones)
# edgecert:local itself is built by `make image`.
set -euo pipefail
export DOCKER_BUILDKIT=0 # the legacy builder: no buildx here, and FROM scratch needs nothing more
cd "$(dirname "$0")/../.."
out=build/images
bin=build/bin
pebble_version=v2.10.1
rm -rf "$out"
mkdir -p "$out"

# --- nginx -----------------------------------------------------------------
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "build.sh: nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }
root=$out/nginx/rootfs
mkdir -p "$root"/{usr/sbin,etc/nginx/conf.d,etc/nginx/certs,var/log/nginx,var/lib/nginx,var/www/acme,run,tmp}
chmod 1777 "$root/tmp"
cp "$nginx_bin" "$root/usr/sbin/nginx"
for lib in $(ldd "$nginx_bin" | grep -o '/[^ ]*'); do
  cp -L --parents "$lib" "$root/"
done
cp /etc/nginx/mime.types "$root/etc/nginx/mime.types"
printf 'root:x:0:0:root:/root:/sbin/nologin\nwww-data:x:33:33:www-data:/var/www:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\n' > "$root/etc/group"
cat > "$root/etc/nginx/nginx.conf" <<'CONF'
user www-data;
worker_processes 2;
pid /run/nginx.pid;
error_log stderr notice;
events { worker_connections 512; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    include /etc/nginx/conf.d/*.conf;
}
CONF
cat > "$out/nginx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
DOCKERFILE
docker build -q -t edgecert-nginx:e2e "$out/nginx" >/dev/null

# --- apache httpd ------------------------------------------------------------
apache_bin=/usr/sbin/apache2
[ -x "$apache_bin" ] || { echo "build.sh: apache2 is not installed (apt-get install apache2-bin)" >&2; exit 1; }
root=$out/apache/rootfs
mods="mpm_event authz_core ssl socache_shmcb mime alias" # unixd is compiled in
mkdir -p "$root"/{usr/sbin,usr/lib/apache2/modules,etc/apache2/conf.d,etc/apache2/certs,var/log/apache2,var/www/acme,run/apache2,tmp}
chmod 1777 "$root/tmp"
cp "$apache_bin" "$root/usr/sbin/apache2"
libs=$(ldd "$apache_bin" | grep -o '/[^ ]*')
for m in $mods; do
  cp "/usr/lib/apache2/modules/mod_$m.so" "$root/usr/lib/apache2/modules/"
  libs="$libs $(ldd "/usr/lib/apache2/modules/mod_$m.so" | grep -o '/[^ ]*')"
done
# glibc loads libgcc_s at thread exit (ldd does not list it); apache's MPM threads need it.
libs="$libs $(ldconfig -p | awk '/libgcc_s.so.1 .*x86-64/ && !found {print $NF; found=1}')"
for lib in $(printf '%s\n' $libs | sort -u); do
  cp -L --parents "$lib" "$root/"
done
cp /etc/mime.types "$root/etc/mime.types" 2>/dev/null || : > "$root/etc/mime.types"
printf 'root:x:0:0:root:/root:/sbin/nologin\nwww-data:x:33:33:www-data:/var/www:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\n' > "$root/etc/group"
{
  for m in $mods; do echo "LoadModule ${m}_module /usr/lib/apache2/modules/mod_$m.so"; done
  cat <<'CONF'
ServerRoot /etc/apache2
ServerName localhost
User www-data
Group www-data
PidFile /run/apache2/apache2.pid
DefaultRuntimeDir /run/apache2
ErrorLog /proc/self/fd/2
LogLevel warn
TypesConfig /etc/mime.types
StartServers 2
# Port 80 serves edgecert's webroot (HTTP-01 tokens); sites go in conf.d.
Listen 80
DocumentRoot /var/www/acme
<Directory /var/www/acme>
    Require all granted
</Directory>
IncludeOptional /etc/apache2/conf.d/*.conf
CONF
} > "$root/etc/apache2/apache2.conf"
cat > "$out/apache/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
STOPSIGNAL SIGWINCH
CMD ["apache2", "-DFOREGROUND"]
DOCKERFILE
docker build -q -t edgecert-apache:e2e "$out/apache" >/dev/null

# --- haproxy (the Docker socket proxy) -----------------------------------------
haproxy_bin=/usr/sbin/haproxy
[ -x "$haproxy_bin" ] || { echo "build.sh: haproxy is not installed (apt-get install haproxy)" >&2; exit 1; }
root=$out/haproxy/rootfs
mkdir -p "$root"/{usr/sbin,usr/local/etc/haproxy,run,tmp}
chmod 1777 "$root/tmp"
cp "$haproxy_bin" "$root/usr/sbin/haproxy"
for lib in $(ldd "$haproxy_bin" | grep -o '/[^ ]*'); do
  cp -L --parents "$lib" "$root/"
done
cat > "$out/haproxy/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
DOCKERFILE
docker build -q -t edgecert-haproxy:e2e "$out/haproxy" >/dev/null

# --- BIND 9 (DNS-01) ---------------------------------------------------------
named_bin=/usr/sbin/named
[ -x "$named_bin" ] || { echo "build.sh: BIND 9 is not installed (apt-get install bind9)" >&2; exit 1; }
root=$out/bind/rootfs
mkdir -p "$root"/{usr/sbin,etc/bind,var/lib/bind,run,tmp}
chmod 1777 "$root/tmp"
cp "$named_bin" "$root/usr/sbin/named"
for lib in $(ldd "$named_bin" | grep -o '/[^ ]*'); do
  cp -L --parents "$lib" "$root/"
done
cat > "$out/bind/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
CMD ["named", "-g", "-c", "/etc/bind/named.conf"]
DOCKERFILE
docker build -q -t edgecert-bind:e2e "$out/bind" >/dev/null

# --- etcd (cluster mode) -------------------------------------------------------
# The server at the client's version, built from its module source (etcd.sh).
[ -x "$bin/etcd" ] || { echo "build.sh: $bin/etcd is missing (run make tools)" >&2; exit 1; }
root=$out/etcd/rootfs
mkdir -p "$root"/{usr/local/bin,var/lib/etcd,tmp}
chmod 1777 "$root/tmp"
cp "$bin/etcd" "$root/usr/local/bin/etcd"
cat > "$out/etcd/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/etcd"]
DOCKERFILE
docker build -q -t edgecert-etcd:e2e "$out/etcd" >/dev/null

# --- pebble ----------------------------------------------------------------
for b in pebble pebble-challtestsrv testapp; do
  [ -x "$bin/$b" ] || { echo "build.sh: $bin/$b is missing (run make tools)" >&2; exit 1; }
done
certs="$(go env GOMODCACHE)/github.com/letsencrypt/pebble/v2@${pebble_version}/test/certs"
[ -f "$certs/localhost/cert.pem" ] || go mod download -x "github.com/letsencrypt/pebble/v2@${pebble_version}" >/dev/null 2>&1
root=$out/pebble/rootfs
mkdir -p "$root"/{usr/bin,test/certs/localhost,test/config,tmp}
# The official images' layout: /usr/bin/pebble, /usr/bin/pebble-challtestsrv, /test/.
cp "$bin/pebble" "$bin/pebble-challtestsrv" "$root/usr/bin/"
cp "$certs/localhost/cert.pem" "$certs/localhost/key.pem" "$root/test/certs/localhost/"
cp "$certs/pebble.minica.pem" "$root/test/certs/"
# httpPort 80: Pebble validates HTTP-01 against nginx's port 80, like Let's Encrypt.
cat > "$root/test/config/pebble-config.json" <<'CONF'
{
  "pebble": {
    "listenAddress": "0.0.0.0:14000",
    "managementListenAddress": "0.0.0.0:15000",
    "certificate": "/test/certs/localhost/cert.pem",
    "privateKey": "/test/certs/localhost/key.pem",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false,
    "retryAfter": {"authz": 3, "order": 5},
    "keyAlgorithm": "ecdsa",
    "profiles": {
      "default": {"description": "90-day certificates", "validityPeriod": 7776000},
      "shortlived": {"description": "2-minute certificates for renewal tests", "validityPeriod": 120}
    }
  }
}
CONF
cat > "$out/pebble/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0
CMD ["/usr/bin/pebble", "-config", "/test/config/pebble-config.json"]
DOCKERFILE
docker build -q -t edgecert-pebble:e2e "$out/pebble" >/dev/null

# --- test app ----------------------------------------------------------------
mkdir -p "$out/testapp"
cp "$bin/testapp" "$out/testapp/testapp"
printf 'FROM scratch\nCOPY testapp /testapp\nCMD ["/testapp"]\n' > "$out/testapp/Dockerfile"
docker build -q -t edgecert-testapp:e2e "$out/testapp" >/dev/null

docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(edgecert|edgecert-[a-z]+):' 
