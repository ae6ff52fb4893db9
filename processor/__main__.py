from processor.cli.commands import main

raise SystemExit(main())
