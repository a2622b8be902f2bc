from tamstore.cli import main

main()
