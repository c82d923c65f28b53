# have_libusb: whether the system library Open3D needs (libusb-1.0) is installed. Sourced by install.sh.
# The listing is read whole before it is searched: `ldconfig -p | grep -q` under pipefail fails now and then,
# when grep stops reading first and ldconfig dies of SIGPIPE.
have_libusb() {
  local libs
  libs=$(ldconfig -p 2>/dev/null || true)
  [[ "$libs" == *libusb-1.0.so* ]]
}
