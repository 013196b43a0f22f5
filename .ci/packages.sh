# What CI needs from Debian, installed only when absent. Sourced by .ci/run (bash).
#
# Each tool is looked for as it is used (command -v, or dpkg for fonts); only the packages of
# missing tools are installed, non-interactively, so on a machine that has everything this is a
# no-op without touching the network. Tests (tests/portal/test_ci_packages.py) exercise the
# choices with CI_ASSUME_ABSENT="tool ..." (pretend these are missing) and CI_DRY_RUN=1 (print
# the apt-get command instead of running it).

# Packages installed by ci_install_packages in this run (space-separated).
CI_INSTALLED=""

ci_assumed_absent() {
  case " ${CI_ASSUME_ABSENT:-} " in *" $1 "*) return 0 ;; esac
  return 1
}

ci_have() {
  ! ci_assumed_absent "$1" && command -v "$1" >/dev/null 2>&1
}

ci_python() {
  # The interpreter the Makefile builds the virtualenv with.
  if ci_have python3.11; then command -v python3.11; elif ci_have python3; then command -v python3; fi
}

ci_has_cjk_fonts() {
  ci_assumed_absent cjk-fonts && return 1
  dpkg -s fonts-noto-cjk >/dev/null 2>&1 && return 0
  ci_have fc-list && [ -n "$(fc-list :lang=zh family 2>/dev/null | head -n 1)" ]
}

ci_missing_packages() {
  # The Debian packages of every tool CI uses that this machine lacks, one per line.
  ci_have pg_ctlcluster || echo postgresql
  { ci_have psql && ci_have pg_isready; } || echo postgresql-client
  ci_have redis-server || echo redis-server
  ci_have redis-cli || echo redis-tools
  ci_have make || echo make
  local python
  python="$(ci_python)"
  if [ -z "$python" ]; then
    echo python3
    echo python3-venv
  elif ! ci_assumed_absent venv && "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    : # `python -m venv` works (it needs ensurepip, which Debian ships in python3-venv)
  else
    echo python3-venv
  fi
  { ci_have chromium && [ -x /usr/bin/chromium ]; } || echo chromium
  ci_has_cjk_fonts || echo fonts-noto-cjk
}

ci_install_packages() {
  local missing
  missing="$(ci_missing_packages | sort -u | tr '\n' ' ')"
  missing="${missing% }"
  if [ -z "$missing" ]; then
    echo "every package CI uses is installed"
    return 0
  fi
  echo "installing: $missing"
  if [ "${CI_DRY_RUN:-0}" = 1 ]; then
    echo "apt-get install -y -qq --no-install-recommends $missing"
    CI_INSTALLED="$missing"
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  CI_INSTALLED="$missing"
}

ci_freshly_installed() {
  case " $CI_INSTALLED " in *" $1 "*) return 0 ;; esac
  return 1
}

ci_trust_local_postgres() {
  # A fresh Debian cluster asks for a password over TCP; CI connects as postgres from
  # 127.0.0.1 (and ::1) without one. Only lines of our own are added, first, once.
  local hba="$1"
  grep -q "^# alliance portal CI" "$hba" && return 0
  local tmp
  tmp="$(mktemp)"
  {
    echo "# alliance portal CI: postgres from this machine over TCP, no password"
    echo "host all postgres 127.0.0.1/32 trust"
    echo "host all postgres ::1/128 trust"
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba"
  rm -f "$tmp"
}

ci_postgres_version() {
  ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}
