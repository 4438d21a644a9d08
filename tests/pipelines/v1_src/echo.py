import sys

print("scale=" + sys.argv[sys.argv.index("--scale") + 1])
