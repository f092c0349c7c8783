from octctl.daemon import main

main()
