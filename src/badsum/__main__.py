from badsum.cli.main import main

raise SystemExit(main())
