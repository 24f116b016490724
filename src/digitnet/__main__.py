from digitnet.cli.main import main

raise SystemExit(main())
