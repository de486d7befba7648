from settle.streams.cli import main

main()
