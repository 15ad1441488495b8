"""Exit 0 when every pinned requirement is installed at its version (so setup
can skip pip, which otherwise re-resolves for several seconds)."""
import sys
from importlib import metadata

ok = True
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != version:
        print(f"requirement {name}=={version}: have {have}", file=sys.stderr)
        ok = False
sys.exit(0 if ok else 1)
