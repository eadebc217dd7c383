from consumers.cli.main import main

raise SystemExit(main())
