from mediaproxy.cli import main

raise SystemExit(main())
