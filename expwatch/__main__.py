from expwatch.cli import main

raise SystemExit(main())
