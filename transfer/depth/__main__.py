from transfer.depth.cli import main

main()
